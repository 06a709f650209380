"""`cnnlab reproduce`: re-run all of part 1 of the lab and write a report (cnnlab.report)."""

from __future__ import annotations

from pathlib import Path


def register(sub):
    p = sub.add_parser(
        "reproduce",
        help="re-run all of part 1 of the lab and write DIR/report.md",
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
    p.add_argument("--out", metavar="DIR", default="runs/reproduce",
                   help="output folder (default: runs/reproduce)")
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
    from cnnlab.report.reproduce import ReproduceOptions, reproduce

    options = ReproduceOptions(out=Path(args.out), seeds=args.seeds, quick=args.quick,
                               device=args.device, quiet=args.quiet, nproc=args.nproc)
    results = reproduce(options)
    failed = [t["key"] for t in results["timings"] if t["status"] != "ok"]
    return 1 if failed else 0
