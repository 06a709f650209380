"""A run directory holds one run (issue 14, bug 2), one training writes to it at a time (bug 5),
and a checkpoint field of the wrong type or value is one line and exit 2, never a traceback
(bug 3). Tiny synthetic data: 96/32/32 images, batch 16, 6 steps an epoch, LeNet on torch layers.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint
from train_helpers import cli, load_json_strict, make_json, one_thread, run_ids

BASE = ["--batch-size", "16", "--eval-steps", "5", "--quiet"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 1-epoch run: (data source, run dir)."""
    from cnnlab.cli import main

    tmp = tmp_path_factory.mktemp("safety")
    data = make_json(tmp / "d.json")
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "lenet-native", "--data", data, "--epochs", "1", *BASE,
                     "--out", str(tmp / "run")]) == 0
    return data, tmp / "run"


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_fresh_run_over_another_run_is_refused_and_overwrite_replaces_only_its_files(
        tmp_path, capsys, done):
    data, _ = done
    out = tmp_path / "run"
    train = ["train", "lenet-native", "--data", data, "--epochs", "1", *BASE, "--out", out]
    with one_thread():
        assert cli(capsys, *train)[0] == 0
        (out / "notes.txt").write_text("mine")
        first = run_ids(out)
        before = _files(out)
        code, _, err = cli(capsys, *train)
        assert code == 2 and err == (
            f"cnnlab train: error: {out} already holds a run (run {first['run.json'][:8]}, "
            "lenet-native) (best.pt, last.pt, history.json, curves.png, run.json): continue it "
            f"with --resume {out}, replace it with --overwrite, or choose another --out\n")
        assert _files(out) == before
        code, _, err = cli(capsys, *train, "--resume", out, "--overwrite")
        assert code == 2 and "give one of them" in err
        # --init from the very run being replaced: read before its files go
        assert cli(capsys, *train, "--overwrite", "--init", out / "best.pt")[0] == 0
    second = run_ids(out)
    assert len(set(first.values())) == len(set(second.values())) == 1
    assert set(first.values()) != set(second.values())
    assert (out / "notes.txt").read_text() == "mine"
    assert load_json_strict(out / "run.json")["config"]["init"] == str(out / "best.pt")


PAUSED_TRAINING = """
import sys
from cnnlab.cli import main
from cnnlab.train.runner import Runner
step = Runner._train_step
def paused(self, x, y):
    step(self, x, y)
    if self.global_step == 2:  # mid-run, holding its directory: wait to be told to go on
        print("step 2", flush=True)
        sys.stdin.readline()
Runner._train_step = paused
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_training_into_a_directory_in_use_is_refused(tmp_path, capsys, done):
    """Two real processes: a `cnnlab train` paused mid-run, and a second one (this process)."""
    import subprocess

    from train_helpers import spawn  # one torch thread, as this process's `one_thread`

    data, _ = done
    out = tmp_path / "run"
    train = ["train", "lenet-native", "--data", data, "--epochs", "1", *BASE]
    first = spawn(PAUSED_TRAINING, *train, "--out", out, stdin=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "step 2\n", first.stderr.read()
        with one_thread():
            code, _, err = cli(capsys, *train, "--overwrite", "--out", out)
        assert code == 2 and err == (
            f"cnnlab train: error: {out} is in use by another cnnlab process (pid {first.pid}); "
            "wait for it to finish or write to another folder\n")
    finally:
        first.communicate("go\n", timeout=120)
    assert first.returncode == 0
    assert len(set(run_ids(out).values())) == 1


def test_predict_batch_size_must_be_positive(capsys, done):
    _, run = done
    for size in ("0", "-3"):
        code, out, err = cli(capsys, "predict", run / "best.pt", run / "curves.png",
                             "--batch-size", size)
        assert (code, out, err) == (2, "", f"cnnlab predict: error: --batch-size must be >= 1, "
                                           f"got {size}\n")


def _set(payload, field, value):
    """payload with `field` ("a" or "a.b" or "a.b.c") set to value, copying what it changes."""
    keys = field.split(".")
    payload = dict(payload)
    node = payload
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = value
    return payload


BAD_FIELDS = [
    ("model.name", 5, "field model.name must be a model name (a non-empty string), got int 5"),
    ("model.kwargs", [1], "field model.kwargs must be a dict of option names to values, got list"),
    ("model.kwargs", {"in_channels": torch.ones(1)},
     "field model.kwargs.in_channels must be a number, string, bool or None, got Tensor"),
    ("config.data", 5, "field config.data must be str, got int 5"),
    ("config", "x", "field config must be a dict, got str 'x'"),
    ("state_dict", [1], "field state_dict must be a dict, got list"),
    ("step", -1, "field step must be an integer >= 0, got int -1"),
    ("epoch", "1", "field epoch must be an integer >= 0, got str '1'"),
    ("best_score", "x", "field best_score must be a finite number or None, got str 'x'"),
    ("history.dev_scores", [[1]], "field history.dev_scores must be a list of [step, number] pairs"),
    ("optimizer.param_groups", [], "field optimizer.param_groups must be a non-empty list"),
    ("rng.torch", torch.zeros(3, dtype=torch.uint8), "field rng.torch must hold 5056 values, holds 3"),
    ("rng.python.state", torch.zeros(3, dtype=torch.int64),
     "field rng.python.state must hold 625 values, holds 3"),
    ("rng.numpy.pos", 700, "field rng.numpy.pos must be an integer in 0..624, got int 700"),
    ("run_id", "x", "field run_id must be 32 hex digits (a uuid4), got str 'x'"),
    ("skipped_steps", [-1], "field skipped_steps must be a list of step numbers, got list"),
    ("resumable", "yes", "field resumable must be True or False, got str 'yes'"),
    ("version", 2, "field version must be 1, got int 2"),
    ("epoch_step", 3, "fields step 6, epoch 1, epoch_step 3 and steps_per_epoch 6 disagree"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS, ids=[f[0] for f in BAD_FIELDS])
def test_a_bad_checkpoint_field_is_named_in_one_line(tmp_path, capsys, done, field, value, message):
    _, run = done
    folder = tmp_path / "bad"
    folder.mkdir()
    path = save_checkpoint(folder / "last.pt", _set(load_checkpoint(run / "last.pt"), field, value))
    prefix = f"error: {path} is not a usable cnnlab checkpoint: "
    code, _, err = cli(capsys, "train", "lenet-native", "--epochs", "2", "--resume", folder)
    assert code == 2 and err.count("\n") == 1 and err.startswith("cnnlab train: " + prefix), err
    assert message in err, err
    if not field.startswith(("rng", "epoch_step", "resumable", "optimizer")):
        code, _, err = cli(capsys, "evaluate", path)
        assert (code, err.count("\n")) == (2, 1) and message in err, err
        assert err.startswith("cnnlab evaluate: " + prefix), err


def test_an_optimizer_state_of_another_model_is_one_line(tmp_path, capsys, done):
    _, run = done
    folder = tmp_path / "bad"
    folder.mkdir()
    payload = load_checkpoint(run / "last.pt")
    groups = [dict(payload["optimizer"]["param_groups"][0], params=[0, 1])]  # 2 of LeNet's 10
    save_checkpoint(folder / "last.pt", _set(payload, "optimizer.param_groups", groups))
    code, _, err = cli(capsys, "train", "lenet-native", "--epochs", "2", "--resume", folder)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("cnnlab train: error: the resumed checkpoint's optimizer or scheduler "
                          "state does not fit this model: "), err


def test_main_turns_user_errors_into_exit_2_and_keeps_other_tracebacks(monkeypatch, capsys):
    import cnnlab.cli.summary as summary
    from cnnlab.cli import main
    from cnnlab.errors import UserError

    def raises(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(summary, "run", raises(UserError("bad input")))
    assert main(["summary", "lenet"]) == 2
    assert capsys.readouterr().err == "cnnlab summary: error: bad input\n"
    monkeypatch.setattr(summary, "run", raises(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):  # a bug is not the user's mistake
        main(["summary", "lenet"])
