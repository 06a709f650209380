"""Checkpoint files: atomic saves, corruption detection, and loading that never runs code.

Issue 5, tests 1-4 and the disk-full / unwritable-folder cases.
"""

import errno
import os
import pickle
import random
import signal
import time

import pytest
import torch

from cnnlab import atomic
from cnnlab.errors import CorruptCheckpointError, UserError
from cnnlab.train import checkpoint as ckpt
from cnnlab.train.rng import capture_rng


def _payload(value=1.0, n=1000):
    model = torch.nn.Linear(4, 3)
    torch.nn.init.constant_(model.weight, value)
    return ckpt.model_payload("linear", {}, model, step=int(value), big=torch.full((n,), value),
                              history={"dev_scores": [[1, 0.5]]}, best_score=None)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_round_trip_keeps_every_value(tmp_path):
    opt_model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = torch.optim.SGD(opt_model.parameters(), lr=0.1, momentum=0.9)
    opt_model(torch.randn(2, 1, 5, 5)).sum().backward()
    opt.step()
    payload = ckpt.model_payload("seq", {"a": 1}, opt_model, optimizer=opt.state_dict(),
                                 rng=capture_rng(torch.Generator().manual_seed(3)),
                                 history={"x": [(0, 1.5)], "none": None}, dtype=torch.float16)
    path = ckpt.save_checkpoint(tmp_path / "a.pt", payload)
    back = ckpt.load_checkpoint(path)
    for key, value in opt_model.state_dict().items():
        assert torch.equal(back["state_dict"][key], value), key
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    assert back["history"] == {"x": [(0, 1.5)], "none": None} and back["dtype"] is torch.float16
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_saved_file_has_the_mode_the_umask_gives_and_the_umask_is_never_touched(
        tmp_path, monkeypatch, umask, mode):
    old = os.umask(umask)
    try:
        def no_umask(*args):
            raise AssertionError("os.umask called while saving: it is process-wide")
        monkeypatch.setattr(atomic.os, "umask", no_umask)
        path = ckpt.save_checkpoint(tmp_path / "a.pt", _payload())
        monkeypatch.undo()
    finally:
        assert os.umask(old) == umask
    assert path.stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------ test 1: failure while pickling

class _SubTensor(torch.Tensor):
    """A tensor subclass: weights_only loading refuses these, so saving must too."""


class _Exploding:
    def __reduce__(self):
        raise RuntimeError("boom while pickling")


def test_pickling_error_leaves_previous_checkpoint_byte_identical(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint(tmp_path / "last.pt", _payload(1.0))
    before = _snapshot(tmp_path)

    # (a) refused by the payload check before pickling starts
    with pytest.raises(TypeError, match="_Exploding"):
        ckpt.save_checkpoint(path, {**_payload(2.0), "bad": _Exploding()})
    assert _snapshot(tmp_path) == before

    # (b) the pickler itself raises half-way (after it has serialised some tensors)
    monkeypatch.setattr(ckpt, "check_payload", lambda obj, where="payload": None)
    with pytest.raises(RuntimeError, match="boom while pickling"):
        ckpt.save_checkpoint(path, {**_payload(2.0), "zzz_last": _Exploding()})
    assert _snapshot(tmp_path) == before

    # (c) the write itself is interrupted (Ctrl-C arriving inside os.write)
    calls, real_write = [], os.write

    def interrupted_write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(fd, data[: len(data) // 2])  # a short write first

    monkeypatch.setattr(atomic.os, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, _payload(3.0))
    assert len(calls) == 2
    assert _snapshot(tmp_path) == before
    assert ckpt.load_checkpoint(path)["step"] == 1


# ------------------------------------------------------------------ test 2: SIGKILL while saving

def _fork(child) -> int:
    """Run `child()` in a forked copy of this process (torch already imported: starts in
    milliseconds, unlike a fresh interpreter) -> pid. The child never returns to pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child() or 0
        finally:
            os._exit(code)
    return pid


def test_sigkill_while_saving_never_leaves_an_unreadable_checkpoint(tmp_path):
    """A child process saves an 8 MB checkpoint in a loop; SIGKILL at 10 random moments (a new
    child each time, on the same file): the checkpoint on disk is always readable and whole."""
    path = tmp_path / "last.pt"
    # Built here, not in the child: a forked child should not start torch's thread pools.
    bigs = [torch.arange(2_000_000, dtype=torch.float32) + k for k in range(3)]
    rng = random.Random(5)
    unreadable, seen = 0, []
    for _ in range(10):
        read_end, write_end = os.pipe()

        def saver():
            os.close(read_end)
            i = 0
            while True:
                i += 1
                ckpt.save_checkpoint(path, {"format": "cnnlab.checkpoint", "version": 1,
                                            "i": i, "big": bigs[i % 3]})
                if i == 1:
                    os.write(write_end, b"1")

        pid = _fork(saver)
        os.close(write_end)
        assert os.read(read_end, 1) == b"1"  # one save done; now kill at a random moment
        os.close(read_end)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        try:
            payload = ckpt.load_checkpoint(path)
            assert torch.equal(payload["big"], bigs[payload["i"] % 3])
            seen.append(payload["i"])
        except CorruptCheckpointError:
            unreadable += 1
        atomic.clean_stale_temps(tmp_path)  # what a killed writer left
    print(f"SIGKILL while saving: {unreadable}/10 unreadable; saves done before each kill: {seen}")
    assert unreadable == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ------------------------------------------------------------------ test 3: corruption detected

def test_flipped_bit_truncation_and_empty_file_are_detected(tmp_path):
    good = ckpt.save_checkpoint(tmp_path / "good.pt", _payload(1.0)).read_bytes()
    rng = random.Random(0)
    header_len = good.index(b"\n") + 1
    # bits in the header, in the zip structure, in tensor data, and the last byte
    positions = [3, 20, header_len + 1, header_len + 200, len(good) // 2, len(good) - 1]
    positions += [rng.randrange(len(good)) for _ in range(10)]
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{pos}.pt"
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptCheckpointError, match=f"flip{pos}.pt"):
            ckpt.load_checkpoint(path)
    for cut in [1, 10, header_len - 1, header_len, header_len + 100, len(good) - 1]:
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(good[:cut])
        with pytest.raises(CorruptCheckpointError, match=f"cut{cut}.pt"):
            ckpt.load_checkpoint(path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="empty.pt.*empty"):
        ckpt.load_checkpoint(empty)


def test_missing_file_and_directory_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="is a directory"):
        ckpt.load_checkpoint(tmp_path)


# ------------------------------------------------------------------ test 4: code in the pickle

class _WritesMarker:
    """Unpickling this calls open(marker, 'w'): a file appears if the pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_files(folder, marker):
    """{name: bytes} of files whose unsafe loading would create `marker`."""
    import hashlib
    import io
    files = {}
    for kind, obj in [("open", _WritesMarker(marker)), ("system", _RunsShell(marker))]:
        evil = {"format": "cnnlab.checkpoint", "version": 1, "state_dict": {}, "x": obj}
        files[f"raw_pickle_{kind}.pt"] = pickle.dumps(evil)
        buf = io.BytesIO()
        torch.save(evil, buf)
        files[f"torch_save_{kind}.pt"] = buf.getvalue()
        # a valid cnnlab header whose SHA-256 matches the malicious payload
        for proto in (2, 4):
            buf = io.BytesIO()
            torch.save(evil, buf, pickle_protocol=proto)
            data = buf.getvalue()
            header = b"CNNLAB-CKPT 1 %s\n" % hashlib.sha256(data).hexdigest().encode()
            files[f"cnnlab_header_{kind}_p{proto}.pt"] = header + data
        buf = io.BytesIO()
        torch.save(evil, buf, _use_new_zipfile_serialization=False)  # legacy format
        data = buf.getvalue()
        files[f"cnnlab_header_{kind}_legacy.pt"] = (
            b"CNNLAB-CKPT 1 %s\n" % hashlib.sha256(data).hexdigest().encode() + data)
    return files


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    files = _malicious_files(tmp_path, marker)
    # The crafted files really would run code under an unsafe load (so this test can fail).
    control = tmp_path / "control.pt"
    control.write_bytes(files["torch_save_open.pt"])
    torch.load(control, weights_only=False)
    assert marker.exists()
    marker.unlink()

    # Also when the environment asks torch to drop weights_only, and when code has widened
    # torch's allowlist: our loader passes weights_only=True explicitly and scans the opcodes.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.serialization.add_safe_globals([os.system])
    try:
        for name, data in files.items():
            path = tmp_path / name
            path.write_bytes(data)
            with pytest.raises(CorruptCheckpointError, match=name):
                ckpt.load_checkpoint(path)
            assert not marker.exists(), name
    finally:
        torch.serialization.clear_safe_globals()


def test_refusal_message_names_the_call(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(_malicious_files(tmp_path, marker)["cnnlab_header_system_p2.pt"])
    with pytest.raises(CorruptCheckpointError, match=r"refused.*(posix|os)\.system"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


# ------------------------------------------------------------------ disk full, unwritable folder

@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_disk_full_while_saving_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = ckpt.save_checkpoint(tmp_path / "last.pt", _payload(1.0))
    before = _snapshot(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, where, full)
    with pytest.raises(UserError, match=r"last\.pt.*disk full.*unchanged"):
        ckpt.save_checkpoint(path, _payload(2.0, n=100_000))
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    assert ckpt.load_checkpoint(path)["step"] == 1


def test_real_size_limit_while_saving(tmp_path):
    """A real failing write: in a child, RLIMIT_FSIZE makes the kernel refuse bytes past 200 kB."""
    import resource
    path = ckpt.save_checkpoint(tmp_path / "last.pt", _payload(1.0))
    before = _snapshot(tmp_path)
    big = _payload(2.0, n=1_000_000)  # built here: a forked child should not use torch's threads

    def child():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            ckpt.save_checkpoint(path, big)
        except UserError as err:
            return 7 if "last.pt is unchanged" in str(err) else 8
        return 9

    _, status = os.waitpid(_fork(child), 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert _snapshot(tmp_path) == before


def test_unwritable_folder_is_a_user_error(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="cannot write .*file/sub/last.pt"):
        ckpt.save_checkpoint(a_file / "sub" / "last.pt", _payload())

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(atomic, "_open_locked_temp", denied)  # tests may run as root: chmod is moot
    with pytest.raises(UserError, match="is not writable"):
        ckpt.save_checkpoint(tmp_path / "ro" / "last.pt", _payload())


def test_payload_check_names_the_bad_value():
    import numpy as np
    with pytest.raises(TypeError, match=r"\['rng'\]\['numpy'\].*numpy.ndarray"):
        ckpt.check_payload({"rng": {"numpy": np.zeros(3)}})
    with pytest.raises(TypeError, match="tensor subclass"):
        ckpt.check_payload({"t": torch.zeros(2).as_subclass(_SubTensor)})
    ckpt.check_payload({"a": [1, 2.0, None, "s", (torch.zeros(1), torch.float32)], 3: {}})
