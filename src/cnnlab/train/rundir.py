"""A run directory holds one run, and one process writes to it at a time.

    with run_directory(out, resuming=False, overwrite=False) as out:
        ...  # train, write best.pt / last.pt / history.json / curves.png / run.json

- The directory is locked for the whole run (`cnnlab.atomic.DirectoryLock`): a second training
  into it is refused with a `UserError` naming it.
- A fresh run into a directory that holds another run's files (`RUN_FILES`) is refused, unless
  `overwrite`, which removes those files first -- and nothing else in the directory.
- The lock holder removes temp files that killed writers left (never a live writer's).
- A directory this call created is removed again when the run fails before writing anything.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from cnnlab.atomic import LOCK_NAME, DirectoryLock, clean_stale_temps
from cnnlab.errors import UserError
from cnnlab.train.validate import check_output_dir

RUN_FILES = ("best.pt", "last.pt", "history.json", "curves.png", "run.json")


@contextlib.contextmanager
def run_directory(out, resuming: bool = False, overwrite: bool = False):
    """Lock `out` (created if needed) for one run -> its Path; see the module docstring."""
    out = Path(out)
    created = not out.exists()
    check_output_dir(out)
    try:
        with DirectoryLock(out):
            existing = [out / name for name in RUN_FILES if (out / name).exists()]
            if existing and not resuming:
                if not overwrite:
                    names = ", ".join(path.name for path in existing)
                    raise UserError(
                        f"{out} already holds a run{_describe(out)} ({names}): continue it with "
                        f"--resume {out}, replace it with --overwrite, or choose another --out")
                for path in existing:
                    path.unlink()
            clean_stale_temps(out)
            yield out
    finally:
        if created:
            _remove_if_empty(out)


def _describe(out: Path) -> str:
    """' (run 1a2b..., lenet)' from the run's run.json, if it is readable."""
    try:
        info = json.loads((out / "run.json").read_text())
        return f" (run {info['run_id'][:8]}, {info['config']['model']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _remove_if_empty(out: Path) -> None:
    try:
        if {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            (out / LOCK_NAME).unlink(missing_ok=True)
            out.rmdir()
    except OSError:  # another process came in meanwhile: leave it
        pass
