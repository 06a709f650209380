"""A non-finite loss (issue 5, test 7): `cnnlab train` stops at that step with a message naming
it and exit status 3, never writes NaN weights; `--skip-nonfinite` skips the step instead."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.train.checkpoint import load_checkpoint
from train_helpers import cli, load_json_strict, make_json, one_thread

K = 8  # the poisoned step: epoch 2, batch 3 (6 steps per epoch)


@pytest.fixture
def poison(monkeypatch):
    """Make the training loss (not the dev loss) NaN at step K, as a bad batch would."""
    real = F.cross_entropy
    seen = {"train": 0}

    def cross_entropy(logits, target, *args, **kwargs):
        loss = real(logits, target, *args, **kwargs)
        if torch.is_grad_enabled():
            step = seen["train"]
            seen["train"] += 1
            if step == K:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(F, "cross_entropy", cross_entropy)


def _all_finite(folder):
    for path in folder.glob("*.pt"):
        for key, value in load_checkpoint(path)["state_dict"].items():
            assert torch.isfinite(value).all(), f"{path.name}: {key}"


def _train(capsys, tmp_path, *extra):
    data = make_json(tmp_path / "d.json")
    with one_thread():
        return cli(capsys, "train", "lenet-native", "--data", data, "--batch-size", 16,
                   "--eval-steps", 5, "--epochs", 3, "--out", tmp_path / "run", "--quiet", *extra)


def test_nan_loss_stops_at_that_step(tmp_path, capsys, poison):
    code, out, err = _train(capsys, tmp_path)
    assert code == 3
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"non-finite training loss (nan) at step {K} (epoch 2, batch 3 of 6)" in err
    assert "last.pt holds step 6" in err
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.pt", "last.pt"]
    assert load_checkpoint(run / "last.pt")["step"] == 6  # the epoch-1 end, before step K
    _all_finite(run)


def test_skip_nonfinite_skips_only_that_step(tmp_path, capsys, poison):
    code, out, err = _train(capsys, tmp_path, "--skip-nonfinite")
    assert code == 0, err
    assert f"non-finite loss (nan) at step {K}" in err and "step skipped" in err
    run = tmp_path / "run"
    history = load_json_strict(run / "history.json")
    steps = [s for s, _ in history["train_step_losses"]]
    assert steps == [s for s in range(18) if s != K]
    assert load_checkpoint(run / "last.pt")["skipped_steps"] == [K]
    _all_finite(run)


def test_divergence_never_saves_nan_weights(tmp_path, capsys):
    code, out, err = _train(capsys, tmp_path, "--lr", "1e9")
    assert code == 3, err
    assert "non-finite" in err and err.count("\n") == 1
    _all_finite(tmp_path / "run")
