"""Every bad input to `cnnlab train` (issue 5, test 10): exit status 2, one line on stderr, no
traceback, and nothing half-written -- the run directory is as it was (or was never made)."""

import errno
import json
import os
import types

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab import atomic
from cnnlab.train import checkpoint as ckpt
from train_helpers import cli, make_json, one_thread


def _snapshot(path):
    """Everything under `path` (a file or folder): {relative path: bytes, or None for a folder}."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 1-epoch lenet-native run to resume from: (data source, run dir)."""
    from cnnlab.cli import main
    tmp = tmp_path_factory.mktemp("bad")
    data = make_json(tmp / "d.json")
    with one_thread():
        assert main(["train", "lenet-native", "--data", data, "--batch-size", "16",
                     "--epochs", "1", "--out", str(tmp / "run"), "--quiet"]) == 0
    return data, tmp / "run"


def _check(capsys, out_dir, *args, expect):
    before = _snapshot(out_dir)
    with one_thread():
        code, out, err = cli(capsys, *args)
    assert code == 2, (args, err)
    assert err.count("\n") == 1 and err.startswith("cnnlab ") and "Traceback" not in err, err
    assert expect in err, err
    assert _snapshot(out_dir) == before, "files changed"
    return err


def test_bad_numbers_and_folders(tmp_path, capsys, done):
    data, _ = done
    out = tmp_path / "new"
    base = ["train", "lenet-native", "--data", data, "--out", out]
    _check(capsys, out, *base, "--batch-size", 0, expect="--batch-size must be >= 1, got 0")
    _check(capsys, out, *base, "--batch-size", -5, expect="--batch-size must be >= 1, got -5")
    _check(capsys, out, *base, "--epochs", -1, expect="--epochs must be >= 0, got -1")
    _check(capsys, out, *base, "--workers", -1, expect="--workers must be >= 0, got -1")
    _check(capsys, out, *base, "--epochs", "two", expect="invalid int value: 'two'")
    _check(capsys, out, "train", "no-such-model", "--data", data, "--out", out, expect="no-such-model")
    _check(capsys, out, *base, "--device", "cuda:7" if torch.cuda.is_available() else "cuda",
           expect="cuda")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _check(capsys, a_file, "train", "lenet-native", "--data", data, "--out", a_file,
           expect="exists and is not a directory")
    _check(capsys, a_file, "train", "lenet-native", "--data", data, "--out", a_file / "sub",
           expect="is not writable")


def test_bad_data(tmp_path, capsys):
    out = tmp_path / "new"
    base = ["train", "lenet-native", "--out", out]
    _check(capsys, out, *base, "--data", f"idx:{tmp_path / 'nowhere'}", expect="nowhere")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([[[], []], [[[0] * 784], [1]], [[[0] * 784], [1]]]))
    _check(capsys, out, *base, "--data", f"nndl-json:{empty}", expect="train")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([[[[0] * 784] * 2, [1, 12]]] * 3))
    _check(capsys, out, *base, "--data", f"nndl-json:{labels}", expect="12")


def test_disk_full_while_saving(tmp_path, capsys, done, monkeypatch):
    data, _ = done
    out = tmp_path / "new"
    real_write, writes = os.write, []

    def full_after(n):
        def write(fd, chunk):
            writes.append(1)
            if len(writes) > n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, chunk)
        return write

    monkeypatch.setattr(atomic.os, "write", full_after(0))  # the very first save fails
    base = ["train", "lenet-native", "--data", data, "--batch-size", "16", "--out", out]
    _check(capsys, out, *base, "--epochs", 1, expect="best.pt: disk full (no space left on device)")
    assert not out.exists()

    # A later save fails: what was saved before stays whole, no temp file is left.
    writes.clear()
    monkeypatch.setattr(atomic.os, "write", full_after(4))  # best.pt and last.pt, then full
    with one_thread():
        code, _, err = cli(capsys, *base, "--epochs", 2, "--eval-steps", 2)
    monkeypatch.undo()
    assert code == 2 and "disk full" in err and err.count("\n") == 1
    names = sorted(p.name for p in out.iterdir())
    assert names == [".lock", "best.pt", "last.pt"], names  # the lock file stays
    for name in names[1:]:
        ckpt.load_checkpoint(out / name)


def test_bad_resume(tmp_path, capsys, done):
    data, run = done
    base = ["train", "lenet-native", "--epochs", 2]
    _check(capsys, run, *base, "--resume", tmp_path / "nowhere", expect="no such file or directory")
    _check(capsys, run, *base, "--resume", tmp_path, expect="no last.pt in this directory")
    _check(capsys, run, *base, "--resume", run / "best.pt", expect="best.pt is not resumable")
    _check(capsys, run, "train", "resnet18", "--epochs", 2, "--resume", run,
           expect="that run trains lenet-native, not resnet18")
    _check(capsys, run, "train", "lenet-native", "--epochs", 0, "--resume", run,
           expect="has already completed 1 epochs")
    _check(capsys, run, *base, "--resume", run, "--lr", "0.5", expect="--lr 0.5 differs")
    _check(capsys, run, *base, "--resume", run, "--out", tmp_path / "elsewhere",
           expect="continues in its own directory")
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = bytearray((run / "last.pt").read_bytes())
    raw[len(raw) // 2] ^= 4
    (bad / "last.pt").write_bytes(bytes(raw))
    _check(capsys, bad, *base, "--resume", bad, expect="last.pt is corrupt")


def test_images_the_model_cannot_take(tmp_path):
    """At the API boundary (train_run with preloaded data): wrong size / channel count."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.run import train_run

    class Part:
        def __init__(self, shape, labels):
            self.images, self.labels = torch.zeros(len(labels), *shape), torch.tensor(labels)

        def __len__(self):
            return len(self.labels)

    def data(shape, labels=(0, 1)):
        part = Part(shape, labels)
        return types.SimpleNamespace(train=part, dev=part, test=part)

    out = tmp_path / "run"
    cfg = TrainConfig(model="lenet-native", epochs=1, out=str(out), quiet=True)
    with pytest.raises(UserError, match=r"cannot take images of shape \[1, 28, 28\]"):
        train_run(cfg, data=data((1, 28, 28)))
    with pytest.raises(UserError, match="label 10 at index 1"):
        train_run(cfg, data=data((1, 32, 32), labels=(0, 10)))
    assert not out.exists() or not any(out.iterdir())
