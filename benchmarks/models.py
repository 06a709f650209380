"""Training step of whole models on cnnlab's fast operators vs the same models on torch's layers.

    python benchmarks/models.py [--device cpu|cuda] [--batch 64] [--json] [--quick] [--clock wall|cpu]
                                [--models lenet ...] [--keep-cache]

LeNet (conv_impl="fast": our conv and pool) vs lenet-native, and ResNet18 (lab and CIFAR stems)
with conv_impl="fast" vs conv_impl="native"; same initial weights; one SGD step (forward,
cross-entropy, backward, update) on torch's layers, on ours with the autotuner off (the rules)
and on (it tunes in the warm-up, from an empty cache unless --keep-cache); rotated rounds,
median ratios (target <= 1.1).
"""

import argparse
import contextlib
import json
import sys

from cnnlab.analysis import speed, tuned

from _timing_args import add_timing_arguments, apply_timing_arguments, print_header


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(ap, "model")
    ap.add_argument("--models", nargs="*", choices=[p[0] for p in speed.MODEL_PAIRS],
                    help="only these models")
    ap.add_argument("--keep-cache", action="store_true",
                    help="tune with the user's autotune cache (default: an empty one; with "
                         "the cache, shapes found there show no algorithm)")
    args = ap.parse_args(argv)
    code = apply_timing_arguments(args)
    if code:
        return code
    with contextlib.nullcontext() if args.keep_cache else tuned.fresh_cache():
        table = tuned.measure_models_tuned(args.batch, args.device, reps=args.reps,
                                           quick=args.quick, names=args.models)
    out = {"environment": speed.environment(args.device), "batch": args.batch, "models": table}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_header(out["environment"], args.batch, "one SGD training step")
    print(tuned.format_tuned("training step: fast operators (autotuner off / on) vs torch's "
                             "layers", table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
