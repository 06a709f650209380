"""The autotuner's disk cache: one JSON file per machine under the user cache directory.

Location: $CNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/cnnlab, else ~/.cache/cnnlab; file
`autotune-<host>.json`:

    {"format": 1, "cnnlab": "0.1.0", "torch": "2.14.1", "host": "...", "cpu": "AMD EPYC",
     "entries": {"cpu AMD EPYC, 2 threads | conv2d float32 nchw x64x6x14x14 w16x6x5x5 s1x1 p0x0
                  grad:w,b": {"algorithm": "unfold", "rule": "unfold", "ms": {...}, ...}, ...}}

A file that does not parse, or was written by another machine, cnnlab or torch version (the
algorithms and the kernels under them change), is ignored with one warning and replaced at the
next save. Saves are atomic (temp file + fsync + rename) and merge what another process saved
meanwhile. A cache that cannot be written costs one warning, never the run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import warnings
from pathlib import Path

import torch

from cnnlab import __version__
from cnnlab.atomic import write_text
from cnnlab.errors import UserError
from cnnlab.runinfo import cpu_model

FORMAT = 1


class AutotuneWarning(UserWarning):
    """The autotune cache was unusable (ignored and rebuilt) or could not be saved."""


def cache_dir() -> Path:
    if os.environ.get("CNNLAB_CACHE_DIR"):
        return Path(os.environ["CNNLAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname() or "host")


def cache_path() -> Path:
    return cache_dir() / f"autotune-{_host()}.json"


def header() -> dict:
    """What a cache file must match to be used: this machine and these versions."""
    return {"format": FORMAT, "cnnlab": __version__, "torch": torch.__version__,
            "host": _host(), "cpu": cpu_model()}


class DiskCache:
    """The entries of one cache file, read once; `save` writes them back merged and atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        self._warned = False
        self._read(warn=True)

    def _warn(self, message):
        if not self._warned:
            self._warned = True
            warnings.warn(message, AutotuneWarning, stacklevel=4)

    def _read(self, warn) -> dict:
        """Entries of the file on disk ({} when absent or unusable, with one warning if `warn`)."""
        try:
            text = self.path.read_text()
        except (FileNotFoundError, NotADirectoryError):     # nothing saved yet (or cannot be)
            return {}
        except OSError as err:
            if warn:
                self._warn(f"cannot read the autotune cache {self.path} ({err}); ignoring it")
            return {}
        try:
            data = json.loads(text)
            entries = data["entries"]
            ok = isinstance(entries, dict) and all(
                isinstance(v, dict) and isinstance(v.get("algorithm"), str)
                for v in entries.values())
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            if warn:
                self._warn(f"ignoring the corrupt autotune cache {self.path}; it will be rebuilt")
            return {}
        mine = header()
        theirs = {k: data.get(k) for k in mine}
        if theirs != mine:
            if warn:
                differ = ", ".join(f"{k} {theirs[k]!r} (here {mine[k]!r})" for k in mine
                                   if theirs[k] != mine[k])
                self._warn(f"ignoring the autotune cache {self.path} written with {differ}; "
                           "it will be rebuilt")
            return {}
        if warn:
            self.entries = entries
        return entries

    def save(self) -> None:
        """Write every entry (ours win over the file's) atomically; failures warn once."""
        entries = {**self._read(warn=False), **self.entries}
        text = json.dumps({**header(), "entries": entries}, indent=1, sort_keys=True)
        try:
            write_text(self.path, text)
        except UserError as err:                     # the writer names the path and reason
            self._warn(f"cannot save the autotune cache {self.path} ({err}); choices are kept "
                       "in memory only")
