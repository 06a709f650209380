"""The limits benchmark runs end to end (tiny batch) and reports the three shapes it explains."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_limits_benchmark_runs_and_names_each_algorithm():
    out = subprocess.run([sys.executable, "benchmarks/limits.py", "--batch", "2", "--reps", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "(" in line and "->" in line]
    assert len(rows) == 3
    assert [r.split()[3] for r in rows] == ["unfold", "im2col", "unfold"]
    swaps = out.stdout.split("LeNet training step")[1].splitlines()[1:]
    assert [s.split()[0] for s in swaps] == ["torch's", "all"] + ["ours,"] * 5
    assert float(swaps[0].split()[-1]) == 1.0


def test_ops_benchmark_reports_tuned_untuned_and_every_candidate(tmp_path):
    import json

    out = subprocess.run([sys.executable, "benchmarks/ops.py", "--quick", "--batch", "2",
                          "--clock", "cpu", "--only", "lenet", "--skip", "pool", "reference",
                          "memory", "--candidates", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["environment"]["device_name"]
    rows = data["conv"]["rows"]
    assert [r["where"] for r in rows] == ["lenet conv1", "lenet conv3", "lenet conv5"]
    for r in rows:
        assert r["rule"] in {"unfold", "matmul"} and r["algorithm"] in {"matmul", "shift",
                                                                        "unfold", "im2col"}
        assert r["ratio"] > 0 and r["untuned_ratio"] > 0 and r["gain"] > 0
    assert data["conv"]["worst"] == max(r["ratio"] for r in rows)
    for r in data["candidates"]["rows"]:
        assert r["rule"] in r["ratios"] and r["algorithm"] in r["ratios"]
        assert r["ratios"][r["rule"]] * r["native_ms"] == pytest.approx(r["ms"][r["rule"]])


def test_the_lenet_step_is_measured_native_untuned_and_tuned(monkeypatch, tmp_path):
    from cnnlab.analysis import tuned
    from cnnlab.ops import autotune
    from train_helpers import one_thread

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    autotune.reset()
    with one_thread():
        table = tuned.measure_models_tuned(batch=2, reps=1, quick=True, names=["lenet"])
    (row,) = table["rows"]
    assert row["shape"] == "lenet" and row["tune_ms"] > 0       # the tuned side tuned
    assert {"native_ms", "untuned_ms", "tuned_ms"} <= set(row)
    assert "lenet" in tuned.format_tuned("step", table)
    autotune.reset()
