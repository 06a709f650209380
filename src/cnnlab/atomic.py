"""Every file cnnlab writes goes through here: complete or absent, never half-written.

    atomic_write(path, chunks)     bytes -> path (temp file in the same folder, fsync, rename)
    write_json(path, obj)          strict JSON: NaN / inf become null, never a bare NaN
    json_text(obj)                 the same JSON as a string (what the CLI's --json prints)
    write_text(path, text)         UTF-8 text (report.md)
    write_figure(path, figure)     a matplotlib Figure, rendered in memory, then written
    DirectoryLock(folder)          one writer per run directory (flock on FOLDER/.lock)
    clean_stale_temps(folder)      remove the temp files of killed writers, never a live one's

A temp file is `.NAME.<random>.cnnlab-tmp`, created with mode 0o666 so that the process's umask
applies as for any new file (no umask is read or changed). Its writer holds an exclusive flock
on it until the rename is done, which is how `clean_stale_temps` tells a live writer's temp file
from a dead one's. Standard library only: this module is a leaf that every layer may import.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import secrets
from pathlib import Path

from cnnlab.errors import UserError

TEMP_SUFFIX = ".cnnlab-tmp"
LOCK_NAME = ".lock"


# ----------------------------------------------------------------------------- writing

def atomic_write(path, chunks) -> Path:
    """Write the byte strings `chunks` to `path` so that `path` is always either old or complete.

    Temp file in the same folder, flush + fsync, `os.replace`, fsync the folder. On any failure
    (disk full, permission, Ctrl-C) the temp file is removed and the old `path` is untouched; an
    OSError becomes a `UserError` naming the path and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_locked_temp(path)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view):]
            os.fsync(fd)
            os.replace(tmp, path)  # still holding the temp's lock: no cleaner can take it
        finally:
            os.close(fd)
    except BaseException as err:  # incl. KeyboardInterrupt: never leave a temp file behind
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def write_text(path, text: str) -> Path:
    """`text` as UTF-8, atomically."""
    return atomic_write(path, [text.encode("utf-8")])


def write_json(path, obj) -> Path:
    """`obj` as indented JSON, atomically. NaN and +-inf become null (JSON has no such numbers);
    Paths become strings, tensors and numpy arrays lists, numpy/torch scalars numbers."""
    return write_text(path, json_text(obj, indent=1) + "\n")


def json_text(obj, indent=None) -> str:
    """`obj` as strict JSON text (see `write_json`)."""
    return json.dumps(json_ready(obj), indent=indent, allow_nan=False)


def json_ready(obj):
    """`obj` with every non-finite float replaced by None and every value plain JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {_json_key(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return json_ready(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def _json_key(key):
    return key if isinstance(key, (str, int, float, bool)) or key is None else str(key)


def write_figure(path, figure, **savefig_kwargs) -> Path:
    """A matplotlib `Figure` rendered to memory in the format of `path`'s suffix, then written
    atomically (savefig straight to `path` would leave half a PNG on a crash)."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    formats = figure.canvas.get_supported_filetypes()
    if kind not in formats:
        raise UserError(f"cannot write {path}: no figure format '.{kind}'; use one of "
                        + ", ".join(f".{f}" for f in sorted(formats)))
    buf = io.BytesIO()
    figure.savefig(buf, format=kind, **savefig_kwargs)
    return atomic_write(path, [buf.getbuffer()])


def write_error(path: Path, err: OSError) -> UserError:
    """The one-line UserError for a failed write of `path`."""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "disk full (no space left on device)"
    elif err.errno == errno.EFBIG:
        reason = "file too large for this file system or size limit"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"folder {path.parent} is not writable ({err.strerror})"
    elif err.errno == errno.EISDIR or path.is_dir():
        return UserError(f"cannot write {path}: it is a directory")
    elif err.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        reason = f"{_first_file_above(path)} is a file, not a folder"
    return UserError(f"cannot write {path}: {reason}; any previous {path.name} is unchanged")


def _first_file_above(path: Path) -> Path:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def _open_locked_temp(path: Path) -> tuple[int, Path]:
    """Create `.NAME.<random>.cnnlab-tmp` next to `path`, locked -> (fd, temp path)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            # 0o666: the umask applies as for any new file; O_EXCL: the name is ours alone.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)  # a cleaner removed it before we locked it: take another name


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # some file systems cannot fsync a directory; the rename has happened anyway
        pass
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------- cleaning

def clean_stale_temps(folder) -> list[Path]:
    """Remove the temp files killed writers left in `folder` -> what was removed.

    A temp file whose writer is alive is locked by it and kept. Call this only while holding the
    folder's `DirectoryLock`: one cleaner per folder."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:  # renamed or removed meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer holds it
            os.close(fd)
            continue
        try:
            if _same_file(fd, tmp):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        finally:
            os.close(fd)
    return removed


# ----------------------------------------------------------------------------- locking

class DirectoryLock:
    """Context manager: an exclusive, non-blocking flock on FOLDER/.lock for as long as it is held.

    A second holder -- another process, or another DirectoryLock in this one -- gets a
    `UserError` naming the folder (and the holder's pid). The kernel drops the lock when the
    process dies, so a killed run never leaves the folder locked. The `.lock` file stays."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"cannot lock {self.folder}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(f"{self.folder} is in use by another cnnlab process{by}; wait for it "
                            "to finish or write to another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
