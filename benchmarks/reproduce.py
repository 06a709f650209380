"""Benchmark of the whole `cnnlab reproduce`: wall time per phase, total, peak RSS, load.

    python benchmarks/reproduce.py [--out DIR] [--quick] [--json]

Runs the default reproduction in this process (so ru_maxrss is its peak RSS), then prints each
phase's wall time and the totals against the issue's targets (≤ 82 s = a tenth of the original
code's 820 s; ≤ 1.5 GB peak RSS), with the load average before and after: other work on the
machine slows every phase, so a measurement is only meaningful with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="output folder (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="the --quick smoke version")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    from cnnlab.report.reproduce import ReproduceOptions, reproduce  # imports torch: timed too

    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "reproduce"
        results = reproduce(ReproduceOptions(out=out, quick=args.quick, quiet=True))
    b = results["budget"]
    summary = {
        "phases": {t["key"]: round(t["wall_s"], 2) for t in results["timings"]},
        "failed": [t["key"] for t in results["timings"] if t["status"] != "ok"],
        "import_s": round(import_s, 2),
        "total_s": round(b["total_wall_s"], 2),
        "process_s": round(b["command_wall_s"], 2),
        "target_s": b["target_s"],
        "peak_rss_gb": round(b["peak_rss_gb"], 3),
        "target_rss_gb": b["target_rss_gb"],
        "floor_s": round(b["floor_s"] or 0, 2),
        "matmul_gflops": round((b["matmul_flops_per_s"] or 0) / 1e9, 1),
        "test_acc": {k.split(":", 1)[1]: v["runs"][0]["test_acc"]
                     for k, v in results["phases"].items()
                     if k.startswith("train:") and "runs" in v},
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for key, s in summary["phases"].items():
        print(f"{key:24s} {s:8.2f} s")
    print(f"{'imports':24s} {summary['import_s']:8.2f} s")
    print(f"{'total (in process)':24s} {summary['total_s']:8.2f} s   target ≤ {summary['target_s']:.0f} s")
    print(f"{'total (process)':24s} {summary['process_s']:8.2f} s")
    print(f"peak RSS {summary['peak_rss_gb']:.2f} GB (target ≤ {summary['target_rss_gb']} GB); "
          f"floor {summary['floor_s']:.1f} s at {summary['matmul_gflops']} GFLOP/s")
    print(f"test accuracy: {summary['test_acc']}")
    print(f"load average before {summary['load_before']}, after {summary['load_after']}")
    if summary["failed"]:
        print(f"FAILED phases: {summary['failed']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
