"""cnnlab checkpoint files: atomic writes, a SHA-256 of the payload, and loading that runs no code.

File layout: one header line `CNNLAB-CKPT 1 <sha256 hex of payload>\n`, then the payload as written
by `torch.save` (a zip archive). `torch.save` alone is not atomic and `torch.load` accepts
bit-flipped files silently, hence the header and the write-then-rename.

Payload (a dict; tensors, numbers, strings, lists and dicts only, so `weights_only=True` loads it):
    format: "cnnlab.checkpoint", version: 1,
    model: {"name": str, "kwargs": dict}      -- rebuilt by cnnlab.models.build_model
    state_dict: the model's state dict
    and, as the trainer needs: optimizer, scheduler, step, epoch, best_score, history, rng, config
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

from cnnlab.errors import CorruptCheckpointError, UserError

MAGIC = b"CNNLAB-CKPT"
VERSION = 1


def save_checkpoint(path, payload: dict) -> Path:
    """Write `payload` to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    header = b"%s %d %s\n" % (MAGIC, VERSION, hashlib.sha256(data).hexdigest().encode())
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write checkpoint {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"cannot write checkpoint {path}: {err.strerror or err}") from err
        raise
    # Make the rename itself durable.
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; check its hash; never run pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    raw = path.read_bytes()
    newline = raw.find(b"\n", 0, 200)
    head = raw[:newline].split(b" ") if newline > 0 else []
    if len(head) != 3 or head[0] != MAGIC:
        raise CorruptCheckpointError(f"{path} is not a cnnlab checkpoint (empty, truncated or another format)")
    data = raw[newline + 1:]
    if hashlib.sha256(data).hexdigest().encode() != head[2]:
        raise CorruptCheckpointError(f"{path} is corrupt: its SHA-256 does not match its header")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # weights_only refuses anything that would run code
        raise CorruptCheckpointError(f"{path} could not be loaded safely: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != "cnnlab.checkpoint":
        raise CorruptCheckpointError(f"{path} does not hold a cnnlab checkpoint payload")
    return payload


def model_payload(model_name: str, model_kwargs: dict, model: torch.nn.Module, **extra) -> dict:
    """The minimal payload for a model: enough for `load_model` to rebuild it."""
    return {
        "format": "cnnlab.checkpoint",
        "version": VERSION,
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": model.state_dict(),
        **extra,
    }


def load_model(path, map_location="cpu", **override_kwargs):
    """Rebuild the model a checkpoint names and load its weights strictly -> (model, payload)."""
    from cnnlab.models import build_model  # lazy: models import nothing from train

    payload = load_checkpoint(path, map_location=map_location)
    spec = payload.get("model") or {}
    if "name" not in spec:
        raise CorruptCheckpointError(f"{path} does not say which model it holds")
    model = build_model(spec["name"], **{**spec.get("kwargs", {}), **override_kwargs})
    model.load_state_dict(payload["state_dict"])
    return model, payload
