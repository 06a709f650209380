"""The limits benchmark runs end to end (tiny batch) and reports the three shapes it explains."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_limits_benchmark_runs_and_names_each_algorithm():
    out = subprocess.run([sys.executable, "benchmarks/limits.py", "--batch", "2", "--reps", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "(" in line and "->" in line]
    assert len(rows) == 3
    assert [r.split()[3] for r in rows] == ["unfold", "im2col", "shift"]
    swaps = out.stdout.split("LeNet training step")[1].splitlines()[1:]
    assert [s.split()[0] for s in swaps] == ["torch's", "all"] + ["ours,"] * 5
    assert float(swaps[0].split()[-1]) == 1.0
