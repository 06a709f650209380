"""Fast (and reference) operators vs torch's, per layer shape of LeNet and ResNet18.

    python benchmarks/ops.py [--device cpu|cuda] [--batch 64] [--json] [--quick] [--clock wall|cpu]
                             [--only TEXT] [--dx-first] [--candidates] [--keep-cache]

Forward + backward, float32, interleaved repetitions, median ratio (see cnnlab.analysis.speed).
Conv and pooling tables: per shape, torch's kernel, ours with the autotuner off (the rules of
fast_conv.choose_algorithm) and on (tuned in the warm-up, from an empty cache unless
--keep-cache), in rotated rounds: tuned / native, untuned / native, tuned / untuned, the rules'
and the tuner's algorithm, the tuning time. As in training, a model's first conv computes no dx
(--dx-first: every conv does). --candidates adds every algorithm's time per conv shape (one
thorough tuning each, F.conv2d in the same rounds: the data the rules' thresholds come from).
Then the lab's reference loops on LeNet's layers (slow: one repetition, small batch) and the
peak memory of fast vs native on the largest conv shape.
"""

import argparse
import contextlib
import json
import sys

from cnnlab.analysis import memory, speed, tuned

from _timing_args import add_timing_arguments, apply_timing_arguments, print_header


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(ap, "shape")
    ap.add_argument("--skip", nargs="*", default=[], choices=["pool", "reference", "memory"],
                    help="parts to leave out")
    ap.add_argument("--only", metavar="TEXT", default=None,
                    help="only the shapes whose layers' names contain TEXT (e.g. lenet)")
    ap.add_argument("--dx-first", action="store_true",
                    help="compute dx for the models' first convs too (no model needs it)")
    ap.add_argument("--candidates", action="store_true",
                    help="also time every algorithm of every conv shape (slow: ~1-2 min)")
    ap.add_argument("--keep-cache", action="store_true",
                    help="tune with the user's autotune cache (default: an empty one; with "
                         "the cache, shapes found there show no algorithm)")
    args = ap.parse_args(argv)
    code = apply_timing_arguments(args)
    if code:
        return code
    reps = 3 if args.quick else args.reps
    shapes = [s for s in speed.conv_shapes() if args.only is None or args.only in s.where]
    out = {"environment": speed.environment(args.device), "batch": args.batch}
    with contextlib.nullcontext() if args.keep_cache else tuned.fresh_cache():
        out["conv"] = tuned.measure_tuned(args.batch, args.device, reps=reps, quick=args.quick,
                                          shapes=shapes, dx_first=args.dx_first)
        if "pool" not in args.skip:
            out["pool"] = tuned.measure_tuned_pool(args.batch, args.device, reps=reps,
                                                   quick=args.quick)
        if args.candidates:
            out["candidates"] = tuned.measure_candidates(args.batch, args.device, shapes,
                                                         dx_first=args.dx_first)
    if "reference" not in args.skip:
        ref_batch = 2 if args.quick else 8
        out["reference"] = {"batch": ref_batch, **speed.measure_reference(ref_batch, args.device)}
    if "memory" not in args.skip:
        out["memory"] = memory.measure_memory(args.batch, args.device)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    dx = "dx everywhere" if args.dx_first else "no dx for a model's first conv"
    print_header(out["environment"], args.batch, f"forward+backward, {dx}")
    print(tuned.format_tuned("conv2d: fast (autotuner off / on) vs native (F.conv2d)",
                             out["conv"]))
    if "pool" in out:
        print()
        print(tuned.format_tuned("pool2d: fast (autotuner off / on) vs native (F.max_pool2d / "
                                 "F.avg_pool2d)", out["pool"]))
    if "candidates" in out:
        print()
        print(tuned.format_candidates(out["candidates"]))
    if "reference" in out:
        print()
        print(speed.format_table(f"reference loops vs native, LeNet layers (batch "
                                 f"{out['reference']['batch']}, one repetition)", out["reference"],
                                 "reference"))
    if "memory" in out:
        m = out["memory"]
        print(f"\npeak memory, conv fwd+bwd on the largest shape {m['shape'].strip()}: native "
              f"{m['native_bytes'] / 2**20:.1f} MiB, fast {m['fast_bytes'] / 2**20:.1f} MiB, "
              f"ratio {m['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
