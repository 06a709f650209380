"""`cnnlab reproduce`: re-run all of part 1 of the lab (or, with --part 2, part 2 on CIFAR-10)
and write a report (cnnlab.report)."""

from __future__ import annotations

from pathlib import Path


def register(sub):
    p = sub.add_parser(
        "reproduce",
        help="re-run the lab (part 1; --part 2: CIFAR-10) and write DIR/report.md",
        description=(
            "Re-run part 1 of the NNDL chapter-5 lab, in order: the operator worked examples and "
            "equivalence checks, the Laplacian edge figure, LeNet's shape walk, parameter and "
            "FLOPs summaries, a custom-vs-native speed table, the three trainings with the lab's "
            "settings (LeNet on the custom operators, ResNet18 without and with residual), the "
            "ResNet18 vs torchvision check and the prediction demo. Writes DIR/report.md (every "
            "figure beside the lab's and the original code's), DIR/results.json, DIR/run.json, "
            "the PNGs, and one run directory per training (DIR/<model>/, or DIR/<model>/seed<s>/ "
            "with --seeds > 1)."
        ),
    )
    p.add_argument("--part", type=int, choices=(1, 2), default=1,
                   help="1: part 1 on MNIST (default); 2: part 2, ResNet18 on CIFAR-10 with the "
                        "lab recipe and the fast recipe, DIR/lab/ and DIR/fast/, confusion "
                        "matrices, test images (needs --data cifar10:PATH)")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="--part 2: cifar10:PATH (get it with `cnnlab data fetch cifar10`)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: runs/reproduce, or runs/reproduce-part2)")
    p.add_argument("--seeds", metavar="N", type=int, default=1,
                   help="train each model with N seeds (100, 101, ...) and report mean ± std, so "
                        "the lab's 'residual beats plain' is tested (default 1)")
    p.add_argument("--nproc", metavar="P", type=int, default=1,
                   help="with --seeds N: train P seeds at once, one per process (the cores shared "
                        "evenly; the same figures as one at a time with that many threads)")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: tiny data subsets, 1 epoch, short speed table")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="device for the trainings (default auto: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.errors import UserError

    if args.part == 2:
        return run_part2(args)
    if args.data is not None:
        raise UserError("--data is for --part 2 (part 1 uses the bundled MNIST lab split)")
    from cnnlab.report.reproduce import ReproduceOptions, reproduce

    options = ReproduceOptions(out=Path(args.out or "runs/reproduce"), seeds=args.seeds,
                               quick=args.quick, device=args.device, quiet=args.quiet,
                               nproc=args.nproc)
    results = reproduce(options)
    failed = [t["key"] for t in results["timings"] if t["status"] != "ok"]
    return 1 if failed else 0


def run_part2(args) -> int:
    from cnnlab.errors import UserError
    from cnnlab.report.part2 import Part2Options, reproduce_part2

    if args.seeds != 1 or args.nproc != 1:
        raise UserError("--seeds and --nproc are for part 1; --part 2 trains each recipe once")
    options = Part2Options(out=Path(args.out or "runs/reproduce-part2"), data=args.data,
                           quick=args.quick, device=args.device, quiet=args.quiet)
    results = reproduce_part2(options)
    failed = [t["key"] for t in results["timings"] if t["status"] != "ok"]
    return 1 if failed else 0
