"""cnnlab checkpoint files: atomic writes, a SHA-256 of the payload, and loading that runs no code.

File layout: one header line `CNNLAB-CKPT 1 <sha256 hex of payload>\n`, then the payload as written
by `torch.save` (a zip archive, pickle protocol 2). `torch.save` alone is not atomic and `torch.load`
accepts bit-flipped files silently, hence the header and `cnnlab.atomic.atomic_write`.

Payload (a dict; tensors, numbers, strings, lists, tuples and dicts only, so `weights_only=True`
loads it -- `save_checkpoint` refuses anything else before it touches the disk):
    format: "cnnlab.checkpoint", version: 1,
    model: {"name": str, "kwargs": dict}      -- rebuilt by cnnlab.models.build_model
    state_dict: the model's state dict
    run_id: the run that wrote it (best.pt of another run is never taken for this run's)
    and, as the trainer needs: optimizer, scheduler, step, epoch, best_score, history, rng, config
Every field is checked by `cnnlab.train.checkpoint_fields` before it is used.

Loading is refused, and nothing in the file runs, when the header or hash is wrong, when the pickle
names any global outside a short allowlist (checked by our own opcode scan), or when
`torch.load(weights_only=True)` refuses it. There is no unsafe fallback.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickletools
import zipfile
from pathlib import Path

import torch

from cnnlab.atomic import atomic_write
from cnnlab.errors import CorruptCheckpointError, UserError
from cnnlab.train import checkpoint_fields

MAGIC = b"CNNLAB-CKPT"
VERSION = 1
PICKLE_PROTOCOL = 2  # what torch.save uses by default; pinned so the opcode scan below stays valid

# The only globals a cnnlab payload's pickle names (module, name). Storage types and dtypes are
# checked by name pattern below. Anything else -- os.system, builtins.eval, ... -- is refused.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}


# ----------------------------------------------------------------------------- writing

def save_checkpoint(path, payload: dict) -> Path:
    """Write `payload` to `path` atomically with a SHA-256 header; the old file stays until then.

    Raises TypeError (nothing written) if the payload holds a value `weights_only` loading would
    refuse, and `UserError` if the file cannot be written (the old checkpoint is then unchanged).
    """
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    check_payload(payload)
    buf = io.BytesIO()
    torch.save(payload, buf, pickle_protocol=PICKLE_PROTOCOL)  # may raise: disk not touched yet
    data = buf.getbuffer()
    header = b"%s %d %s\n" % (MAGIC, VERSION, hashlib.sha256(data).hexdigest().encode())
    return atomic_write(path, [header, data])


def check_payload(obj, where: str = "payload") -> None:
    """Raise TypeError naming the first value `torch.load(weights_only=True)` could not load."""
    if obj is None or type(obj) in (bool, int, float, str, bytes, torch.dtype, torch.Size, torch.device):
        return
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"checkpoint {where} is a tensor subclass {type(obj).__name__}")
        return
    if type(obj) in (dict, collections.OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint {where} has a key of type {type(key).__name__}")
            check_payload(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_payload(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} holds a {type(obj).__module__}.{type(obj).__qualname__}; only tensors, "
        "numbers, strings, None and lists/tuples/dicts of them can be loaded safely"
    )


# ----------------------------------------------------------------------------- reading

def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; check its hash; never run pickled code.

    Raises `CorruptCheckpointError` (naming the file) for an empty, truncated, bit-flipped or
    foreign file, or one whose pickle would call anything but tensor rebuilding.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; expected a file such as {path}/last.pt")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    data = _verified_data(path, raw)
    _scan_pickle(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # weights_only refuses anything that would run code
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptCheckpointError(f"{path} was refused by safe loading: {first}") from err
    if not isinstance(payload, dict) or payload.get("format") != "cnnlab.checkpoint":
        raise CorruptCheckpointError(f"{path} does not hold a cnnlab checkpoint payload")
    checkpoint_fields.check_fields(payload, path)
    return payload


def _verified_data(path: Path, raw: bytes) -> memoryview:
    if not raw:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes); it is not a cnnlab checkpoint")
    newline = raw.find(b"\n", 0, 200)
    head = raw[:newline].split(b" ") if newline > 0 else []
    if len(head) != 3 or head[0] != MAGIC or len(head[2]) != 64:
        raise CorruptCheckpointError(
            f"{path} is not a cnnlab checkpoint (no valid '{MAGIC.decode()}' header: truncated, "
            "damaged, or a plain torch.save file, which cnnlab does not load because it may run code)"
        )
    if head[1] != b"%d" % VERSION:
        raise CorruptCheckpointError(
            f"{path} has checkpoint format version {head[1].decode(errors='replace')}; "
            f"this cnnlab reads version {VERSION}"
        )
    data = memoryview(raw)[newline + 1:]
    if hashlib.sha256(data).hexdigest().encode() != head[2]:
        raise CorruptCheckpointError(
            f"{path} is corrupt: its SHA-256 does not match its header (truncated or damaged; "
            f"{len(data)} payload bytes)"
        )
    return data


def _scan_pickle(path: Path, data) -> None:
    """Refuse a payload whose pickle names any global outside `_SAFE_GLOBALS`, before unpickling.

    Independent of torch's own weights_only check (defence in depth: e.g. code elsewhere may
    have widened torch's allowlist with `add_safe_globals`).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise CorruptCheckpointError(f"{path} payload is not a torch.save archive")
            pkl = archive.read(names[0])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CorruptCheckpointError(f"{path} payload is not a torch.save zip archive: {err}") from err
    try:
        for op, arg, _ in pickletools.genops(pkl):
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if not _safe_global(module, name):
                    raise CorruptCheckpointError(
                        f"{path} was refused: its pickle calls {module}.{name}, which a checkpoint "
                        "never needs (nothing in it was run)"
                    )
            elif op.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                raise CorruptCheckpointError(
                    f"{path} was refused: its pickle uses opcode {op.name}, which cnnlab never writes "
                    "(nothing in it was run)"
                )
    except CorruptCheckpointError:
        raise
    except Exception as err:  # malformed pickle stream
        raise CorruptCheckpointError(f"{path} payload pickle is malformed: {err}") from err


def _safe_global(module: str, name: str) -> bool:
    if (module, name) in _SAFE_GLOBALS:
        return True
    if module == "torch" and name.isidentifier():
        if name.endswith("Storage") and name[0].isupper():
            return True
        return isinstance(getattr(torch, name, None), torch.dtype)
    return False


# ----------------------------------------------------------------------------- models

def model_payload(model_name: str, model_kwargs: dict, model: torch.nn.Module, **extra) -> dict:
    """The minimal payload for a model: enough for `load_model` to rebuild it."""
    return {
        "format": "cnnlab.checkpoint",
        "version": VERSION,
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": model.state_dict(),
        **extra,
    }


def load_model(path, map_location="cpu", strict: bool = True, expect: str | None = None,
               **override_kwargs):
    """Rebuild the model a checkpoint names and load its weights -> (model, payload).

    `strict=True` (the default) raises a `UserError` listing missing, unexpected and mis-shaped
    keys; `strict=False` loads what fits and stores the report in `payload["load_report"]`.
    `expect`: a model name; a checkpoint of another model is a UserError (nothing is built).
    """
    from cnnlab.models import build_model  # lazy: models import nothing from train
    from cnnlab.train.loading import load_state_strict

    payload = load_checkpoint(path, map_location=map_location)
    name, kwargs = checkpoint_fields.check_model(payload, path)
    if expect is not None and name != expect:
        raise UserError(f"{path} holds a {name!r} model, not {expect!r}")
    model = build_model(name, **{**kwargs, **override_kwargs})
    payload["load_report"] = load_state_strict(model, payload["state_dict"], strict=strict,
                                               source=str(path))
    return model, payload
