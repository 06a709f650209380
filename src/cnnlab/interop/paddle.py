"""Import and export the lab's PaddlePaddle weights (`.pdparams`) without Paddle and without trusting a pickle.

A `.pdparams` file from `paddle.save(model.state_dict(), path)` is a pickle (protocol 4 by default)
of a plain dict: parameter name -> float32 `numpy.ndarray`, plus one entry
`"StructuredToParameterName@@"` (structured name -> Paddle's internal name, a dict of strings) that is
not a parameter. Names and layouts of the supported models: `cnnlab.interop.paddle_layouts`.

    arrays = read_pdparams("best_model.pdparams")          # {name: ndarray}, nothing executed
    info = load_paddle_weights(model, arrays)               # layout detected from the keys
    write_pdparams(model, "for_paddle.pdparams")            # the notebook can set_state_dict it
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.atomic import atomic_write
from cnnlab.data.safe_pickle import UnsafePickleError, dumps_arrays, safe_load
from cnnlab.errors import UserError
from cnnlab.interop import paddle_layouts as layouts

NAME_TABLE_KEY = "StructuredToParameterName@@"
BIG_PARAM_KEY = "UnpackBigParamInfor@@"  # paddle.save splits arrays > 4 GB under protocol 2/3
_SHOW = 5  # keys listed per kind of problem in an error message


@dataclass(frozen=True)
class PaddleTransfer:
    """What an import or export did: the layout, what it stands for, and how much was moved."""

    layout: str
    description: str
    tensors: int
    values: int


# ---------------------------------------------------------------------------------------------
# Reading


def read_pdparams(path) -> dict[str, np.ndarray]:
    """The arrays of a `.pdparams` file, name -> ndarray, read with a restricted unpickler.

    Drops the `StructuredToParameterName@@` name table. UserError for a missing, truncated or
    non-pickle file; `UnsafePickleError` (a UserError) for a pickle that names any global beyond
    numpy array/dtype reconstruction -- it is refused before anything is called."""
    return _read_pdparams(path)[0]


def _read_pdparams(path) -> tuple[dict[str, np.ndarray], str]:
    """-> (arrays, SHA-256 hex) of one read of the file: the hash is of the bytes parsed."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a .pdparams file")
    if not path.is_file():
        raise UserError(f"Paddle weights file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    if data.startswith(b"CNNLAB-CKPT"):
        raise UserError(f"{path} is a cnnlab checkpoint, not a .pdparams file: use it directly")
    if data.startswith(b"PK\x03\x04"):
        raise UserError(f"{path} is a zip archive (a PyTorch .pt file?), not a .pdparams pickle")
    try:
        obj = safe_load(data)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, UnicodeDecodeError, MemoryError, RecursionError) as err:
        raise UserError(
            f"{path} is not a readable .pdparams file (empty, truncated or not a pickle): "
            f"{type(err).__name__}: {err}"
        ) from None
    return _arrays_from(obj, path), hashlib.sha256(data).hexdigest()


def _arrays_from(obj, path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not the dict of arrays paddle.save writes")
    obj = dict(obj)
    obj.pop(NAME_TABLE_KEY, None)
    if BIG_PARAM_KEY in obj:
        obj = _join_big_params(obj, path)
    arrays, bad = {}, []
    for key, value in obj.items():
        # paddle >= 2.1 pickles a bare Tensor (not in a state dict) as (name, ndarray)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]
        if (not isinstance(key, str) or not isinstance(value, np.ndarray)
                or value.dtype.kind not in "biuf"):
            bad.append(f"{key!r} ({type(value).__name__})")
            continue
        arrays[key] = value
    if bad:
        raise UserError(
            f"{path} is not a model state dict: entries that are not numeric arrays: {_listing(bad)}"
            " (save model.state_dict() alone, not a dict of dicts)"
        )
    if not arrays:
        raise UserError(f"{path} holds no arrays")
    return arrays


def _join_big_params(obj, path):
    try:
        for key, info in obj.pop(BIG_PARAM_KEY).items():
            parts = [obj.pop(name) for name in info["slices"]]
            obj[key] = np.concatenate([p.reshape(-1) for p in parts]).reshape(info["OriginShape"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path} has a broken {BIG_PARAM_KEY} entry: {err}") from None
    return obj


def _as_arrays(path_or_dict) -> tuple[dict[str, np.ndarray], str]:
    if isinstance(path_or_dict, dict):
        return _arrays_from(path_or_dict, "the given dict"), "the given dict"
    return read_pdparams(path_or_dict), str(path_or_dict)


# ---------------------------------------------------------------------------------------------
# Importing


def _mismatch(entries, arrays):
    """(missing entries, unexpected Paddle keys, [(entry, file shape)] of wrong shape)."""
    expected = {e.paddle: e for e in entries}
    missing = [e for e in entries if e.paddle not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    wrong = [(expected[k], tuple(a.shape)) for k, a in arrays.items()
             if k in expected and tuple(a.shape) != expected[k].paddle_shape]
    return missing, unexpected, wrong


def _listing(items) -> str:
    items = list(items)
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def _shape(shape) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def _problems(missing, unexpected, wrong) -> str:
    parts = []
    if missing:
        parts.append("missing " + _listing(
            e.paddle if e.paddle == e.ours else f"{e.paddle} (ours {e.ours})" for e in missing))
    if unexpected:
        parts.append("unexpected " + _listing(unexpected))
    if wrong:
        parts.append("wrong shape " + _listing(
            f"{e.paddle} {_shape(got)}, needs {_shape(e.paddle_shape)} (ours {e.ours} {_shape(e.shape)})"
            for e, got in wrong))
    return "; ".join(parts)


def _hint(family, missing, unexpected, arrays) -> str:
    guess = layouts.guess_source(arrays)
    if guess and guess[0] != family:
        return f"; this file looks like {guess[1]}"
    stem = {e.ours for e in missing} & {"conv1.bias"}
    if stem:
        return "; the file has no stem-conv bias: build the model with stem_bias=False"
    if {"conv1.bias", "net.0.0.bias"} & set(unexpected):
        return "; the file has a stem-conv bias: build the model with stem_bias=True"
    return ""


def detect_layout(model: nn.Module, arrays: dict, where: str = "the arrays") -> str:
    """The one layout of `model`'s family whose names and shapes the file's arrays match exactly.

    UserError naming the closest layout and the keys that did not fit when none matches."""
    family = layouts.model_family(model)
    scored = []
    for layout in layouts.layouts_for(family):
        entries = layouts.plan(model, layout)
        missing, unexpected, wrong = _mismatch(entries, arrays)
        if not (missing or unexpected or wrong):
            return layout
        fit = len(entries) - len(missing) - len(wrong)
        scored.append((fit - len(unexpected), layout, (missing, unexpected, wrong)))
    _, layout, problems = max(scored, key=lambda s: s[0])
    raise UserError(
        f"{where} fits no Paddle layout of this {family} model: closest is {layout!r} "
        f"({layouts.describe(layout, family)}): {_problems(*problems)}"
        f"{_hint(family, problems[0], problems[1], arrays)}"
    )


def load_paddle_weights(model: nn.Module, path_or_dict, source: str | None = None) -> PaddleTransfer:
    """Load Paddle weights into `model` strictly (every tensor, exact shapes) -> what was loaded.

    path_or_dict: a `.pdparams` path or the dict `read_pdparams` returns. source: "lab"
    (Model_LeNet / Model_ResNet18), "paddle-lenet" (Paddle_LeNet), "paddle-vision"
    (paddle.vision resnet18), or None to detect it from the keys. Missing, unexpected and
    mis-shaped keys raise UserError naming them in Paddle's names and ours; the model is unchanged
    then. `num_batches_tracked` keeps the model's value (Paddle has none)."""
    arrays, where = _as_arrays(path_or_dict)
    return _load_arrays(model, arrays, where, source)


def _load_arrays(model, arrays, where, source) -> PaddleTransfer:
    family = layouts.model_family(model)
    layout = detect_layout(model, arrays, where) if source in (None, "auto") else source
    entries = layouts.plan(model, layout)
    missing, unexpected, wrong = _mismatch(entries, arrays)
    if missing or unexpected or wrong:
        raise UserError(
            f"{where} does not fit {layouts.describe(layout, family)}: "
            f"{_problems(missing, unexpected, wrong)}{_hint(family, missing, unexpected, arrays)}"
        )
    current = model.state_dict()
    new_state = dict(current)  # keeps num_batches_tracked
    for e in entries:
        tensor = torch.from_numpy(np.array(arrays[e.paddle], copy=True))
        new_state[e.ours] = layouts.to_ours(tensor, e.rule).to(current[e.ours].dtype)
    model.load_state_dict(new_state, strict=True)
    return PaddleTransfer(layout, layouts.describe(layout, family), len(entries),
                          sum(int(np.prod(e.shape)) for e in entries))


# ---------------------------------------------------------------------------------------------
# Exporting


def paddle_state_dict(model: nn.Module, layout: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """`model`'s weights as the Paddle model of `layout` names and shapes them -> (arrays, layout).

    layout None: the one the lab would have used (`paddle_layouts.default_layout`)."""
    layout = layout or layouts.default_layout(model)
    state = model.state_dict()
    arrays = {}
    for e in layouts.plan(model, layout):
        tensor = layouts.to_paddle(state[e.ours].detach().to("cpu", torch.float32), e.rule)
        arrays[e.paddle] = np.ascontiguousarray(tensor.numpy())
    if layout == "lab" and layouts.model_family(model) == "resnet" and "net.0.0.bias" not in arrays:
        raise UserError("the lab's Model_ResNet18 has a stem-conv bias and this model has none "
                        "(stem_bias=False): export it with layout 'paddle-vision'")
    if layout == "paddle-vision" and "conv1.bias" in arrays:
        raise UserError("paddle.vision's resnet18 has no stem-conv bias and this model has one "
                        "(stem_bias=True): export it with layout 'lab'")
    return arrays, layout


def _name_table(arrays: dict) -> dict[str, str]:
    # Paddle's own internal names are not recoverable; Paddle loads by structured name (the
    # default of set_state_dict) and paddle.load drops this table, so plausible names suffice.
    table, counters, current = {}, {}, {}
    for key, array in arrays.items():
        layer, _, attr = key.rpartition(".")
        if layer not in current:
            kind = ("batch_norm2d" if attr in ("_mean", "_variance") or _is_bn(arrays, layer)
                    else "conv2d" if array.ndim == 4 else "linear")
            current[layer] = f"{kind}_{counters.setdefault(kind, 0)}"
            counters[kind] += 1
        suffix = {"weight": "w_0", "bias": "b_0", "_mean": "w_1", "_variance": "w_2"}.get(attr, attr)
        table[key] = f"{current[layer]}.{suffix}"
    return table


def _is_bn(arrays, layer):
    return f"{layer}._mean" in arrays


def write_pdparams(model: nn.Module, path, layout: str | None = None, protocol: int = 4) -> PaddleTransfer:
    """Write `model`'s weights as a `.pdparams` file the lab's notebook can `set_state_dict` from.

    The file is what `paddle.save(paddle_model.state_dict(), path)` writes: a pickle (protocol 4)
    of a dict of float32 arrays in the Paddle layout plus the `StructuredToParameterName@@` table.
    Written atomically (temp file, fsync, rename)."""
    arrays, layout = paddle_state_dict(model, layout)
    data = dumps_arrays({**arrays, NAME_TABLE_KEY: _name_table(arrays)}, protocol=protocol)
    atomic_write(path, [data])
    family = layouts.model_family(model)
    return PaddleTransfer(layout, layouts.describe(layout, family), len(arrays),
                          sum(int(a.size) for a in arrays.values()))


# ---------------------------------------------------------------------------------------------
# Whole models, for the command line


def is_pdparams(path) -> bool:
    """True for a `.pdparams` name or a file that starts like a pickle (not a cnnlab checkpoint)."""
    path = Path(path)
    if path.suffix == ".pdparams":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"  # pickle PROTO opcode (protocol >= 2)
    except OSError:
        return False


def model_from_pdparams(path, model_name: str, layout: str | None = None, **model_kwargs):
    """Build `model_name` to fit a `.pdparams` file and load it -> (model, payload, PaddleTransfer).

    in_channels, num_classes and (ResNet) stem_bias are read off the file unless given. payload is
    a cnnlab checkpoint payload (`cnnlab.train.checkpoint.model_payload`) whose config records the
    source file, so `save_checkpoint(out, payload)` makes a checkpoint of the imported weights."""
    from cnnlab.models import build_model
    from cnnlab.train.checkpoint import model_payload

    arrays, sha256 = _read_pdparams(path)
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    kwargs = {**layouts.infer_model_kwargs(model_name, shapes), **model_kwargs}
    model = build_model(model_name, **kwargs)
    info = _load_arrays(model, arrays, str(path), layout)
    source = {
        "format": "paddle.pdparams",
        "path": str(path),
        "sha256": sha256,  # of the very bytes the arrays were parsed from
        "layout": info.layout,
        "description": info.description,
    }
    model.eval()
    return model, model_payload(model_name, kwargs, model, config={"source": source}), info


def read_weights_file(path, model_name: str, layout: str | None = None) -> tuple[dict, dict, str]:
    """A cnnlab checkpoint or a `.pdparams` file as initial weights for `train --init` ->
    (state dict in cnnlab's names, model kwargs the weights need beyond the data's, description).

    The only such kwarg is a ResNet's `stem_bias`, which the file shows. The file is read once;
    the caller hands the state dict to `cnnlab.train.run.train_run(init_state=...)`."""
    if is_pdparams(path):
        model, payload, info = model_from_pdparams(path, model_name, layout)
        state, kwargs = model.state_dict(), payload["model"]["kwargs"]
        description = f"{path} ({info.description})"
    else:
        from cnnlab.train.checkpoint import load_checkpoint
        from cnnlab.train.checkpoint_fields import check_model

        payload = load_checkpoint(path)
        name, kwargs = check_model(payload, path)
        state = payload["state_dict"]
        description = f"{path} ({name} checkpoint)"
    resnet = model_name.startswith("resnet")
    return state, {k: v for k, v in kwargs.items() if k == "stem_bias" and resnet}, description
