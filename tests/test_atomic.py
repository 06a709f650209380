"""cnnlab.atomic, the one writer of every file: strict JSON, nothing half-written, temp files of
killed writers cleaned but never a live writer's, and one process per run directory."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from cnnlab import atomic
from cnnlab.errors import UserError
from train_helpers import ROOT, load_json_strict


def test_write_json_is_strict_json_with_null_for_nan_and_inf(tmp_path):
    obj = {"scores": [[15, 0.5], [30, math.nan]], "best": math.inf, "worst": -math.inf,
           "tensor": torch.tensor([1.0, float("nan")]), "numpy": np.float64(0.25),
           "count": np.int64(3), "path": tmp_path / "x", "nested": ({"ok": True, 2: None},)}
    path = atomic.write_json(tmp_path / "a.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert load_json_strict(path) == {
        "scores": [[15, 0.5], [30, None]], "best": None, "worst": None, "tensor": [1.0, None],
        "numpy": 0.25, "count": 3, "path": str(tmp_path / "x"), "nested": [{"ok": True, "2": None}]}
    with pytest.raises(TypeError, match="object"):
        atomic.write_json(tmp_path / "b.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # nothing written for b


def test_ctrl_c_inside_a_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = atomic.write_text(tmp_path / "report.md", "old")
    calls = []

    def interrupted(fd, data):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(path, {"new": 1})
    monkeypatch.undo()
    assert calls and path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_temp_names_are_unique_and_locked(tmp_path):
    import fcntl

    fd1, tmp1 = atomic._open_locked_temp(tmp_path / "a.pt")
    fd2, tmp2 = atomic._open_locked_temp(tmp_path / "a.pt")
    try:
        assert tmp1 != tmp2 and tmp1.name.startswith(".a.pt.") and tmp1.name.endswith(".cnnlab-tmp")
        probe = os.open(tmp1, os.O_RDONLY)
        with pytest.raises(BlockingIOError):  # its writer holds it
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        os.close(fd1)
        os.close(fd2)


WRITER = """
import sys
from cnnlab.atomic import atomic_write
def chunks():
    yield b"first half, "
    print("writing", flush=True)
    sys.stdin.readline()          # a live writer, paused half-way
    yield b"second half"
atomic_write(sys.argv[1], chunks())
print("done", flush=True)
"""


def test_cleaning_removes_a_dead_writers_temp_never_a_live_ones(tmp_path):
    target = tmp_path / "last.pt"
    dead = tmp_path / ".last.pt.0123456789ab.cnnlab-tmp"   # a killed writer's: nobody locks it
    dead.write_bytes(b"half")
    other = tmp_path / ".notes.tmp"                          # not ours: never touched
    other.write_text("keep")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert writer.stdout.readline() == "writing\n"
        (live,) = [p for p in tmp_path.glob(".last.pt.*.cnnlab-tmp") if p != dead]
        assert atomic.clean_stale_temps(tmp_path) == [dead]
        assert live.exists() and other.exists()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "done\n"
    finally:
        writer.kill()
        writer.wait()
    assert target.read_bytes() == b"first half, second half"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "last.pt"]


HOLDER = """
import sys
from cnnlab.atomic import DirectoryLock
with DirectoryLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_directory_lock_is_one_process_at_a_time_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError) as err:
            with atomic.DirectoryLock(tmp_path):
                pass
        assert str(err.value) == (f"{tmp_path} is in use by another cnnlab process (pid "
                                  f"{holder.pid}); wait for it to finish or write to another folder")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with atomic.DirectoryLock(tmp_path) as lock:  # the kernel dropped the dead holder's lock
        assert lock.path == tmp_path / ".lock"
        with pytest.raises(UserError, match="in use"):  # a second holder in this process too
            atomic.DirectoryLock(tmp_path).__enter__()


def test_figure_is_written_whole_or_refused(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    assert atomic.write_figure(tmp_path / "f.png", fig).read_bytes().startswith(b"\x89PNG")
    assert atomic.write_figure(tmp_path / "f.svg", fig).read_text().lstrip().startswith("<?xml")
    with pytest.raises(UserError, match=r"no figure format '\.xyz'"):
        atomic.write_figure(tmp_path / "f.xyz", fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]
