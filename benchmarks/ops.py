"""Fast (and reference) operators vs torch's, per layer shape of LeNet and ResNet18.

    python benchmarks/ops.py [--device cpu|cuda] [--batch 64] [--json] [--quick] [--clock wall|cpu]

Forward + backward, float32, interleaved repetitions, median ratio (see cnnlab.analysis.speed).
Prints the conv table (ratio = fast / native, and the algorithm the selector chose), its geometric
mean and worst ratio, the pooling table, the lab's reference loops on LeNet's layers (slow: one
repetition, small batch) and the peak memory of fast vs native on the largest conv shape.
"""

import argparse
import json
import sys

from cnnlab.analysis import speed

from _timing_args import add_timing_arguments, apply_timing_arguments, print_header


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(ap, "shape")
    ap.add_argument("--skip", nargs="*", default=[], choices=["pool", "reference", "memory"],
                    help="parts to leave out")
    args = ap.parse_args(argv)
    code = apply_timing_arguments(args)
    if code:
        return code
    reps = 3 if args.quick else args.reps
    out = {"environment": speed.environment(args.device), "batch": args.batch}
    out["conv"] = speed.measure(args.batch, args.device, reps=reps, quick=args.quick)
    if "pool" not in args.skip:
        out["pool"] = speed.measure_pool(args.batch, args.device, reps=reps, quick=args.quick)
    if "reference" not in args.skip:
        ref_batch = 2 if args.quick else 8
        out["reference"] = {"batch": ref_batch, **speed.measure_reference(ref_batch, args.device)}
    if "memory" not in args.skip:
        out["memory"] = speed.measure_memory(args.batch, args.device)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_header(out["environment"], args.batch, "forward+backward")
    print(speed.format_table("conv2d: fast vs native (F.conv2d)", out["conv"]))
    if "pool" in out:
        print()
        print(speed.format_table("pool2d: fast vs native (F.max_pool2d / F.avg_pool2d)", out["pool"]))
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
