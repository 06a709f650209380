"""Best-checkpoint rules across stops and resumes (issue 5, test 8): a NaN score is never best,
a regression or a tie never replaces best.pt, best.pt is never deleted, and after a resume a
worse score never overwrites a better best.pt -- even when best.pt is ahead of last.pt."""

import math
import shutil
import signal
import types

import torch
import torch.nn.functional as F

from cnnlab.data import TensorLoader
from cnnlab.models import build_model
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.guard import TrainGuard, TrainingStopped
from cnnlab.train.resume import load_resume, restore_run
from cnnlab.train.runner import Runner
from train_helpers import one_thread

NAN = math.nan
# dev score by step (one evaluation after every step, steps 1..9 of a 10-step epoch)
SCORES = {1: NAN, 2: 0.5, 3: 0.4, 4: 0.7, 5: NAN, 6: 0.6, 7: 0.7, 8: 0.65, 9: 0.8}


class ScriptedScore:
    """A metric whose score is SCORES[step] of the runner's current step."""

    def __init__(self, scores):
        self.scores, self.runner = scores, None

    def reset(self):
        pass

    def update(self, logits, labels):
        pass

    def accumulate(self):
        return self.scores[self.runner.global_step - 1]


class StopAt:
    """Stands in for StopOnSignal: 'SIGINT arrives' once the runner reaches `step`."""

    signum, signal_name = signal.SIGINT, "SIGINT"

    def __init__(self, runner, step):
        self.runner, self.step = runner, step

    @property
    def requested(self):
        return self.step is not None and self.runner.global_step >= self.step


def _data():
    g = torch.Generator().manual_seed(0)
    return types.SimpleNamespace(images=torch.randn(40, 1, 32, 32, generator=g),
                                 labels=torch.randint(0, 10, (40,), generator=g))


def _runner(scores):
    torch.manual_seed(0)
    model = build_model("lenet-native")
    metric = ScriptedScore(scores)
    runner = Runner(model, torch.optim.SGD(model.parameters(), lr=0.05), F.cross_entropy, metric,
                    device="cpu", progress=False, log=False, model_spec={"name": "lenet-native",
                                                                        "kwargs": {}})
    metric.runner = runner
    train = TensorLoader(_data(), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    return runner, train, TensorLoader(_data(), 20)


def _train(folder, scores=SCORES, stop_at=None, resume_from=None):
    """One (possibly resumed) run in `folder` that stops when it reaches step `stop_at`."""
    runner, train, dev = _runner(scores)
    guard = TrainGuard(folder / "last.pt")
    if resume_from is not None:
        _, payload = load_resume(resume_from)
        restore_run(runner, payload, train, guard, best_path=folder / "best.pt")
    guard.stop = StopAt(runner, stop_at)
    runner.guard = guard
    try:
        runner.train(train, dev, num_epochs=1, log_steps=0, eval_steps=1, save_path=folder / "best.pt")
    except TrainingStopped:
        assert stop_at is not None
    return runner


def _best(folder):
    payload = load_checkpoint(folder / "best.pt")
    return payload["best_score"], (folder / "best.pt").read_bytes()


def test_best_rules_over_stops_and_resumes(tmp_path):
    with one_thread():
        r = _train(tmp_path, stop_at=2)               # step 1 scores NaN: no best yet
        assert not (tmp_path / "best.pt").exists() and r.best_step is None
        shutil.copy(tmp_path / "last.pt", tmp_path / "last_step2.pt")

        r = _train(tmp_path, stop_at=4, resume_from=tmp_path)  # 0.5, then 0.4 (a regression)
        assert _best(tmp_path)[0] == 0.5 and r.best_step == 2
        shutil.copy(tmp_path / "last.pt", tmp_path / "last_step4.pt")

        r = _train(tmp_path, stop_at=6, resume_from=tmp_path)  # 0.7, then NaN
        best_07, bytes_07 = _best(tmp_path)
        assert best_07 == 0.7 and r.best_step == 4

        r = _train(tmp_path, stop_at=9, resume_from=tmp_path)  # 0.6, 0.7 (a tie), 0.65
        assert _best(tmp_path) == (0.7, bytes_07) and r.best_score == 0.7

        r = _train(tmp_path, resume_from=tmp_path)  # 0.8: the new best
        assert _best(tmp_path)[0] == 0.8 and r.best_step == 9
        scores = [s for _, s in r.dev_scores]
        assert [x for x in scores if not math.isnan(x)] == [0.5, 0.4, 0.7, 0.6, 0.7, 0.65, 0.8]
        assert sum(math.isnan(x) for x in scores) == 2  # NaNs recorded, never best


def test_resume_from_behind_best_never_overwrites_a_better_best(tmp_path):
    """best.pt (0.7, step 4) is newer than last.pt (step 2), as after a kill between the two
    saves of one evaluation. The replay scores step 4 lower this time (e.g. a non-deterministic
    GPU): without reading best.pt's score, 0.55 > 0.5 would overwrite the 0.7 model."""
    with one_thread():
        _train(tmp_path, stop_at=2)
        shutil.copy(tmp_path / "last.pt", tmp_path / "last_step2.pt")
        _train(tmp_path, stop_at=6, resume_from=tmp_path)
        best_07, bytes_07 = _best(tmp_path)
        assert best_07 == 0.7
        shutil.copy(tmp_path / "last_step2.pt", tmp_path / "last.pt")  # last.pt behind best.pt
        replay = {**SCORES, 2: 0.5, 4: 0.55, 6: 0.6, 7: 0.69, 8: 0.65, 9: 0.1}
        r = _train(tmp_path, scores=replay, resume_from=tmp_path)
        assert _best(tmp_path) == (0.7, bytes_07)
        assert r.best_score == 0.7 and r.best_step == 4


def test_nan_first_score_then_improvement(tmp_path):
    with one_thread():
        r = _train(tmp_path, scores={**SCORES, 2: NAN, 3: 0.2}, stop_at=4)
    assert _best(tmp_path)[0] == 0.2 and r.best_step == 3


def test_a_best_pt_of_another_run_is_never_adopted(tmp_path):
    """Issue 14, bug 2: a run stopped before its first dev evaluation and resumed, in a folder
    that holds another run's best.pt (score 0.99), keeps and tests its own best model."""
    from cnnlab.train.checkpoint import model_payload, save_checkpoint

    with one_thread():
        r = _train(tmp_path, stop_at=1)                 # one step, no evaluation: no best.pt
        assert not (tmp_path / "best.pt").exists()
        other = build_model("lenet-native")
        save_checkpoint(tmp_path / "best.pt", model_payload(
            "lenet-native", {}, other, run_id="f" * 32, best_score=0.99, step=5))
        resumed = _train(tmp_path, resume_from=tmp_path)
    assert resumed.run_id == r.run_id != "f" * 32
    best = load_checkpoint(tmp_path / "best.pt")
    assert (best["run_id"], best["best_score"]) == (r.run_id, 0.8)
    assert resumed.best_score == 0.8 and resumed.best_step == 9


def test_history_json_is_strict_json_with_null_for_a_nan_score(tmp_path):
    from train_helpers import load_json_strict

    with one_thread():
        r = _train(tmp_path)
    history = load_json_strict(r.write_history(tmp_path / "history.json"))
    assert history["run_id"] == r.run_id
    assert [s for _, s in history["dev_scores"]] == [None, 0.5, 0.4, 0.7, None, 0.6, 0.7, 0.65, 0.8]
    assert (history["best_score"], history["best_step"]) == (0.8, 9)
