"""The autotuner (cnnlab.ops.autotune): choice, cache, modes, pinning, failures, keys.

No real timing: a fake timer returns a cost per algorithm (it still runs each candidate, so a
broken one raises as it would). conftest.py turns the tuner off for the rest of the suite;
the `tuner` fixture turns it on here, with a private cache folder.
"""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab import nn as cnn
from cnnlab import runinfo
from cnnlab.errors import UserError
from cnnlab.ops import _conv_rows, autotune, fast_conv, fast_pool, tune_cache
from train_helpers import one_thread

ROOT = Path(__file__).resolve().parents[1]


class FakeTimer:
    """Seconds per candidate from a table (default 1 s); counts the calls per name."""

    def __init__(self, costs=None):
        self.costs = dict(costs or {})
        self.calls: dict[str, int] = {}

    def __call__(self, name, run):
        self.calls[name] = self.calls.get(name, 0) + 1
        run()
        return self.costs.get(name, 1.0)

    @property
    def total(self):
        return sum(self.calls.values())


def never(name, run):
    raise AssertionError(f"the tuner timed {name} although it must not time")


@pytest.fixture
def tuner(tmp_path, monkeypatch):
    """Tuner on, fresh state, cache in tmp_path, one torch thread (see test_cli_tune); shift is
    the cheapest, the rules pick unfold."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CNNLAB_AUTOTUNE", "on")
    autotune.reset()
    timer = FakeTimer({"shift": 0.001, "im2col": 0.0015, "unfold": 0.003, "matmul": 0.004})
    autotune.set_timer(timer)
    with one_thread():
        yield timer
    autotune.reset()


def conv_inputs(batch=4, grad=True, seed=0):
    """LeNet's conv3 shape (6->16 5x5 on 14x14): shift, unfold and im2col apply; rule: unfold."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 6, 14, 14, generator=gen).requires_grad_(grad)
    w = torch.randn(16, 6, 5, 5, generator=gen).requires_grad_(grad)
    b = torch.randn(16, generator=gen).requires_grad_(grad)
    return x, w, b


def conv(x, w, b, algo=None):
    return fast_conv.conv2d(x, w, b, (1, 1), (0, 0), algo=algo)


def used(x, w, b):
    return autotune.decisions()[autotune.conv_key(x, w, b)]


# ------------------------------------------------------------------------------ choosing

def test_times_every_applicable_candidate_and_keeps_the_fastest(tuner):
    x, w, b = conv_inputs()
    y = conv(x, w, b)
    assert used(x, w, b) == {"algorithm": "shift", "source": "tuned"}
    assert set(tuner.calls) == {"shift", "unfold", "im2col"}       # matmul does not apply
    assert torch.equal(y, conv(x, w, b, algo="shift"))
    entry = autotune.measurements()[autotune.conv_key(x, w, b)]
    assert entry["rule"] == "unfold" and entry["ms"]["shift"] == pytest.approx(1.0)
    saved = json.loads(autotune.cache_path().read_text())
    machine = f"cpu {runinfo.cpu_model()}, {torch.get_num_threads()} threads"
    assert saved["entries"][f"{machine} | {autotune.conv_key(x, w, b)}"]["algorithm"] == "shift"


def test_timing_stops_early_and_within_its_budget(tuner):
    x, w, b = conv_inputs()
    conv(x, w, b)
    # Warm-up + round 1; unfold (3x the best) is dropped; round 2 shows a clear leader: stop.
    assert tuner.calls == {"shift": 3, "im2col": 3, "unfold": 2}
    tuner.costs = {"shift": 0.2, "unfold": 0.21, "im2col": 0.22}   # the warm-up spends 0.63 s
    x2, w2, b2 = conv_inputs(batch=16)
    tuner.calls.clear()
    conv(x2, w2, b2)
    assert tuner.calls == {"shift": 2, "unfold": 2, "im2col": 2}   # one timed round, then over
    tuner.costs = {"shift": 0.001, "unfold": 0.0041, "im2col": 0.0015}
    x3, w3, b3 = conv_inputs(batch=32)
    tuner.calls.clear()
    conv(x3, w3, b3)
    assert tuner.calls == {"shift": 3, "unfold": 1, "im2col": 3}   # > 4x after the warm-up
    assert autotune.measurements()[autotune.conv_key(x3, w3, b3)]["ms"]["unfold"] == \
        pytest.approx(4.1)


def test_a_near_tie_keeps_the_rules_choice(tuner):
    tuner.costs = {"shift": 0.00100, "unfold": 0.00102, "im2col": 0.002}
    x, w, b = conv_inputs()
    conv(x, w, b)
    assert used(x, w, b)["algorithm"] == "unfold"


def test_a_candidate_that_raises_is_skipped_and_its_error_kept(tuner, monkeypatch):
    class Broken:
        @staticmethod
        def forward(*args):
            raise RuntimeError("boom")
    monkeypatch.setitem(fast_conv._IMPL, "shift", Broken)
    x, w, b = conv_inputs()
    y = conv(x, w, b)
    assert used(x, w, b)["algorithm"] == "im2col"                 # the next cheapest
    assert torch.equal(y, conv(x, w, b, algo="im2col"))
    entry = autotune.measurements()[autotune.conv_key(x, w, b)]
    assert entry["errors"] == {"shift": "RuntimeError: boom"} and "shift" not in entry["ms"]


# ------------------------------------------------------------------------------ the cache

def test_cache_round_trip_in_memory_on_disk_and_in_a_new_process(tuner):
    x, w, b = conv_inputs()
    conv(x, w, b)
    timed = tuner.total
    conv(x, w, b)
    assert tuner.total == timed                                     # memory: not timed again
    autotune.reset()                                                # memory gone, disk stays
    autotune.set_timer(never)
    conv(x, w, b)
    assert used(x, w, b) == {"algorithm": "shift", "source": "cache"}
    code = ("import json, sys, torch; from cnnlab.ops import autotune, fast_conv; "
            "torch.set_num_threads(int(sys.argv[1])); autotune.set_timer(None); "
            "g = torch.Generator().manual_seed(0); "
            "x = torch.randn(4, 6, 14, 14, generator=g, requires_grad=True); "
            "w = torch.randn(16, 6, 5, 5, generator=g, requires_grad=True); "
            "b = torch.randn(16, generator=g, requires_grad=True); "
            "fast_conv.conv2d(x, w, b); print(json.dumps(autotune.decisions()))")
    out = subprocess.run([sys.executable, "-c", code, str(torch.get_num_threads())],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "CNNLAB_AUTOTUNE": "cached"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[autotune.conv_key(x, w, b)] == \
        {"algorithm": "shift", "source": "cache"}


def _one_warning(record):
    return [w for w in record if issubclass(w.category, autotune.AutotuneWarning)]


def test_a_corrupt_cache_is_ignored_with_one_warning_and_rebuilt(tuner):
    path = autotune.cache_path()
    path.write_text('{"format": 1, "entries": {"cut short')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for grad in (True, False):                                  # two keys, one warning
            conv(*conv_inputs(grad=grad))
    assert len(_one_warning(record)) == 1 and "corrupt" in str(_one_warning(record)[0].message)
    saved = json.loads(path.read_text())
    assert saved["format"] == tune_cache.FORMAT and len(saved["entries"]) == 2


@pytest.mark.parametrize("field", ["host", "torch", "cnnlab", "cpu"])
def test_a_foreign_cache_is_ignored_with_one_warning_and_rebuilt(tuner, field):
    x, w, b = conv_inputs()
    conv(x, w, b)                                                   # a genuine cache, then
    path = autotune.cache_path()
    saved = json.loads(path.read_text())
    for entry in saved["entries"].values():
        entry["algorithm"] = "im2col"                               # ... other choices,
    saved[field] = "another one"                                    # ... from elsewhere
    path.write_text(json.dumps(saved))
    autotune.reset()
    autotune.set_timer(FakeTimer({"shift": 0.001}))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        conv(x, w, b)
        conv(*conv_inputs(grad=False))
    assert len(_one_warning(record)) == 1 and field in str(_one_warning(record)[0].message)
    assert used(x, w, b) == {"algorithm": "shift", "source": "tuned"}  # timed again
    rebuilt = json.loads(path.read_text())
    assert rebuilt[field] == tune_cache.header()[field] and len(rebuilt["entries"]) == 2


def test_an_unwritable_cache_warns_once_and_the_choice_still_holds(tuner, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(blocker / "cache"))    # below a file: no folder
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for grad in (True, False):
            x, w, b = conv_inputs(grad=grad)
            conv(x, w, b)
    assert len(_one_warning(record)) == 1 and "cannot save" in str(_one_warning(record)[0].message)
    assert used(x, w, b)["source"] == "tuned"


# ------------------------------------------------------------------------------ modes

def test_off_uses_the_rules_never_times_and_ignores_the_cache(tuner, monkeypatch):
    x, w, b = conv_inputs()
    conv(x, w, b)                                                   # the cache says shift
    autotune.set_timer(never)
    monkeypatch.setenv("CNNLAB_AUTOTUNE", "off")
    y = conv(x, w, b)
    assert used(x, w, b) == {"algorithm": "unfold", "source": "rule"}
    assert torch.equal(y, conv(x, w, b, algo="unfold"))
    monkeypatch.setenv("CNNLAB_AUTOTUNE", "on")
    with autotune.using("off"):                                     # the Python setting wins
        conv(*conv_inputs(batch=32))
    assert autotune.decisions()[autotune.conv_key(*conv_inputs(batch=32))]["source"] == "rule"


def test_cached_uses_the_cache_else_the_rules_and_never_times(tuner):
    x, w, b = conv_inputs()
    conv(x, w, b)
    autotune.set_timer(never)
    with autotune.using("cached"):
        conv(x, w, b)
        x2, w2, b2 = conv_inputs(batch=32)                          # an unknown key
        conv(x2, w2, b2)
    assert used(x, w, b)["algorithm"] == "shift"
    assert used(x2, w2, b2) == {"algorithm": "unfold", "source": "rule"}


def test_a_forced_algorithm_is_honoured_whatever_the_mode_cache_or_pins(tuner):
    x, w, b = conv_inputs()
    conv(x, w, b)                                                   # the cache says shift
    geo = fast_conv.geometry(x.shape, w.shape, (1, 1), (0, 0))
    expected = _conv_rows.forward(x.detach(), w.detach(), b.detach(), geo)[0]
    autotune.set_timer(never)
    for mode in autotune.MODES:
        with autotune.using(mode), autotune.pinned({autotune.conv_key(x, w, b): "unfold"}):
            assert torch.equal(conv(x, w, b, algo="im2col"), expected)
    x2, w2, b2 = conv_inputs(batch=32)
    conv(x2, w2, b2, algo="im2col")                                 # forced: nothing to decide
    assert autotune.conv_key(x2, w2, b2) not in autotune.decisions()


def test_a_bad_mode_is_a_user_error(monkeypatch):
    monkeypatch.setenv("CNNLAB_AUTOTUNE", "fastest")
    with pytest.raises(UserError, match="CNNLAB_AUTOTUNE"):
        autotune.mode()
    with pytest.raises(UserError, match="expected one of on, cached, off"):
        autotune.set_mode("always")


# ------------------------------------------------------------------------------ pin / record

class Tiny(torch.nn.Module):
    """Two fast convs (the second needs dx), LeNet's average pool and a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = cnn.Conv2D(3, 8, 3, padding=1)
        self.conv2 = cnn.Conv2D(8, 16, 3, padding=1)
        self.pool = cnn.Pool2D(2, mode="avg")
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return self.fc(x.flatten(1))


def train_tiny():
    """3 SGD steps and one evaluation from fixed weights and data -> (state, eval output)."""
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        out = model(x)
    return {k: v.clone() for k, v in model.state_dict().items()}, out


def test_pinned_choices_replay_a_training_bit_for_bit_after_the_cache_changed(tuner):
    state, out = train_tiny()                                       # run 1 picks shift/tiles
    recorded = json.loads(json.dumps(autotune.decisions()))         # as run.json keeps it
    assert {d["algorithm"] for d in recorded.values()} == {"shift", "tiles"}
    # The cache changes (another load, another tuning): im2col and views are now cheapest.
    autotune.reset()
    tune_cache.cache_path().unlink()
    autotune.set_timer(FakeTimer({"im2col": 0.001, "views": 0.001}))
    train_tiny()
    assert {d["algorithm"] for d in autotune.decisions().values()} == {"im2col", "views"}
    # The resumed run pins the recorded choices: same algorithms, same bits, nothing timed.
    autotune.reset()
    autotune.set_timer(never)
    with autotune.pinned(recorded):
        state2, out2 = train_tiny()
    assert autotune.decisions() == {k: {"algorithm": d["algorithm"], "source": "pinned"}
                                    for k, d in recorded.items()}
    assert all(torch.equal(state[k], state2[k]) for k in state) and torch.equal(out, out2)


def test_a_pinned_algorithm_that_does_not_apply_is_a_user_error(tuner):
    x, w, b = conv_inputs()
    with autotune.pinned({autotune.conv_key(x, w, b): "matmul"}):
        with pytest.raises(UserError, match="pinned algorithm 'matmul' does not apply"):
            conv(x, w, b)


# ------------------------------------------------------------------------------ keys

def test_the_key_holds_batch_bucket_dtype_layout_and_gradients():
    x, w, b = conv_inputs(batch=40)
    key = autotune.conv_key(x, w, b)
    assert key == "conv2d float32 nchw x64x6x14x14 w16x6x5x5 s1x1 p0x0 grad:x,w,b"
    assert autotune.conv_key(conv_inputs(batch=64)[0], w, b) == key       # same bucket
    assert "x128x6" in autotune.conv_key(conv_inputs(batch=65)[0], w, b)
    assert "grad:w,b" in autotune.conv_key(x.detach(), w, b)              # a first layer
    with torch.no_grad():
        assert autotune.conv_key(x, w, b).endswith("grad:none")
    assert " nhwc " in autotune.conv_key(x.to(memory_format=torch.channels_last), w, b)
    assert "float64" in autotune.conv_key(x.double(), w.double(), b.double())
    assert autotune.conv_key(x, w, b, stride=2, padding=1).endswith("s2x2 p1x1 grad:x,w,b")


def test_the_thread_count_is_part_of_the_key(tuner):
    x, w, b = conv_inputs()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        conv(x, w, b)
        timed = tuner.total
        torch.set_num_threads(2)
        conv(x, w, b)
        assert tuner.total > timed
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ pooling

def test_average_pooling_backward_paths_are_tuned_and_agree_with_torch(tuner):
    tuner.costs = {"views": 0.001, "tiles": 0.002}
    x = torch.randn(4, 16, 10, 10, requires_grad=True)
    gy = torch.randn(4, 16, 5, 5)
    (gx,) = torch.autograd.grad(fast_pool.pool2d(x, (2, 2), (2, 2), (0, 0), "avg"), x, gy)
    key = autotune.pool_key(x, (2, 2), (2, 2), (0, 0), "avg")
    assert autotune.decisions()[key] == {"algorithm": "views", "source": "tuned"}
    (expected,) = torch.autograd.grad(F.avg_pool2d(x, 2, 2), x, gy)
    torch.testing.assert_close(gx, expected)
    (forced,) = torch.autograd.grad(fast_pool.pool2d(x, (2, 2), (2, 2), (0, 0), "avg", "views"),
                                    x, gy)
    assert torch.equal(gx, forced)
    tuner.calls.clear()
    fast_pool.pool2d(x, (2, 2), (2, 2), (0, 0), "max")              # one path: nothing to tune
    with torch.no_grad():                                           # same forward either way
        fast_pool.pool2d(x, (2, 2), (2, 2), (0, 0), "avg")
    assert tuner.calls == {} and len(autotune.decisions()) == 1


@pytest.mark.parametrize("size", [(10, 10), (7, 9)])              # 7x9: a row/column left over
def test_both_average_pooling_paths_give_torchs_gradient_on_tiling_windows(size):
    x = torch.randn(3, 4, *size, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(3, 4, size[0] // 2, size[1] // 2, dtype=torch.float64)
    (expected,) = torch.autograd.grad(F.avg_pool2d(x, 2, 2), x, gy)
    for algo in fast_pool.AVG_ALGORITHMS:
        y = fast_pool.pool2d(x, (2, 2), (2, 2), (0, 0), "avg", algo)
        torch.testing.assert_close(torch.autograd.grad(y, x, gy)[0], expected)
    with pytest.raises(ValueError, match="expected algo in"):
        fast_pool.pool2d(x, (3, 3), (2, 2), (1, 1), "avg", "tiles")   # does not tile


def test_a_candidate_must_beat_the_rules_choice_in_every_round(tuner):
    """Noise: shift is faster in the median but lost round 2 to unfold, the rules' choice."""
    costs = {"shift": [0.001, 0.0009, 0.0015, 0.0009, 0.0009, 0.0009],   # warm-up, rounds 1-5
             "unfold": [0.0011] + [0.0012] * 5, "im2col": [0.002] * 6}
    autotune.set_timer(lambda name, run: costs[name].pop(0))
    x, w, b = conv_inputs()
    conv(x, w, b)
    entry = autotune.measurements()[autotune.conv_key(x, w, b)]
    assert entry["rounds"] == 5 and entry["ms"]["shift"] < entry["ms"]["unfold"]
    assert entry["algorithm"] == "unfold"
