"""`cnnlab tune MODEL`: the table of every candidate per layer shape, cached choices, bad input."""

import json

import pytest

from cnnlab.ops import autotune
from train_helpers import cli, one_thread


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache; one torch thread (two contend on a shared 2-core machine: every product
    of the 25-tap algorithms then waits for a descheduled thread)."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    autotune.reset()
    with one_thread():
        yield tmp_path
    autotune.reset()


def test_tune_lenet_times_each_shape_against_torch_and_caches_it(capsys, fresh):
    code, out, err = cli(capsys, "tune", "lenet", "--batch", "2", "--device", "cpu", "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = {(tuple(r["layers"]), r["pass"]): r for r in data["rows"]}
    # conv1 needs no dx (its input is the data); pool4's two backward paths are tuned in
    # training only; evaluation (no gradient) tunes the three convs forward only.
    assert set(rows) == {(("conv1",), "train"), (("conv3",), "train"), (("pool4",), "train"),
                         (("conv5",), "train"), (("conv1",), "eval"), (("conv3",), "eval"),
                         (("conv5",), "eval")}
    assert rows[("conv1",), "train"]["key"].endswith("x2x1x32x32 w6x1x5x5 s1x1 p0x0 grad:w,b")
    assert set(rows[("conv5",), "train"]["candidates_ms"]) == {"matmul", "shift", "unfold",
                                                               "im2col"}
    for r in data["rows"]:
        assert r["ms"] == r["candidates_ms"][r["algorithm"]]
        assert r["ms"] == min(r["candidates_ms"].values()) or r["algorithm"] == r["rule"]
        assert r["native_ms"] > 0 and r["ratio"] == pytest.approx(r["ms"] / r["native_ms"])
    cached = json.loads((fresh / autotune.cache_path().name).read_text())["entries"]
    assert {k.split(" | ")[1] for k in cached} == {r["key"] for r in data["rows"]}


def test_tune_prints_a_table_with_every_candidate(capsys, fresh):
    autotune.set_timer(lambda name, run: (run(), {"shift": 0.001}.get(name, 0.002))[1])
    code, out, err = cli(capsys, "tune", "lenet", "--batch", "2", "--device", "cpu")
    assert code == 0, err
    assert "conv3" in out and "shift (rule: unfold)" in out and "native" in out
    assert "tuned 7 shapes" in out


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "unknown model 'nosuch'"),
    (["lenet", "--batch", "0"], "--batch must be a positive integer"),
    (["lenet-native"], "runs on torch's layers only"),
    (["lenet", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_tune_bad_input_is_one_line_and_exit_2(capsys, fresh, args, message):
    code, out, err = cli(capsys, "tune", *args)
    assert code == 2 and err.startswith("cnnlab tune: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
