"""Training step of whole models on cnnlab's fast operators vs the same models on torch's layers.

    python benchmarks/models.py [--device cpu|cuda] [--batch 64] [--json] [--quick] [--clock wall|cpu]

LeNet (conv_impl="fast": our conv and pool) vs lenet-native, and ResNet18 (lab and CIFAR stems)
with conv_impl="fast" vs conv_impl="native"; same initial weights; one SGD step (forward,
cross-entropy, backward, update), interleaved repetitions, median ratio (target <= 1.1).
"""

import argparse
import json
import sys

import torch

from cnnlab.analysis import speed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7, help="interleaved pairs per model (default 7)")
    ap.add_argument("--models", nargs="*", choices=[p[0] for p in speed.MODEL_PAIRS],
                    help="only these models")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time with torch's default threads (default); cpu: this "
                         "thread's CPU time with torch on 1 thread, which other processes' load "
                         "cannot inflate (for a shared machine)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.clock == "cpu" and args.device == "cuda":
        print("error: --clock cpu times CPU work; use the wall clock on cuda", file=sys.stderr)
        return 2
    speed.set_clock(args.clock)
    table = speed.measure_models(args.batch, args.device, reps=args.reps, quick=args.quick,
                                 names=args.models)
    out = {"environment": speed.environment(args.device), "batch": args.batch, "models": table}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    env = out["environment"]
    print(f"torch {env['torch']}, {env['device']} ({env['device_name']}), {env['threads']} threads, "
          f"{env['clock']} clock, load average {env['load_average']:.1f}, "
          f"batch {args.batch}, float32, one SGD training step, median of interleaved pairs\n")
    print(speed.format_table("training step: fast operators vs torch's layers", table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
