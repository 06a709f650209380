"""Every field of a checkpoint payload, checked once, before any of it is used.

The SHA-256 header proves that a file is whole, not that what it holds is sane: a payload written
by other code, by a future version, or edited by hand can hold a model name that is a number or a
step that is negative. Each check below raises `CorruptCheckpointError` naming the file and the
field ("runs/a/best.pt: field model.kwargs must be a dict of option names to values, got list").

    check_fields(payload, where)      every field present (load_checkpoint calls it on each load)
    check_model(payload, where)       -> (name, kwargs) of a model cnnlab can build, with weights
    check_resumable(payload, where)   the fields `--resume` needs, and that they agree
"""

from __future__ import annotations

import math
import re

import torch

from cnnlab.errors import CorruptCheckpointError

_RUN_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
_HISTORY_PAIRS = ("train_step_losses", "dev_losses", "dev_scores")
RESUME_FIELDS = ("config", "step", "epoch", "optimizer", "rng", "epoch_step", "steps_per_epoch",
                 "model", "state_dict", "run_id")
_SOURCES = ("tuned", "cache", "rule", "pinned")  # of an algorithm: autotune.decisions()
_MT_WORDS = 624  # words of a Mersenne Twister state (Python's random adds 1: the position)


class _Bad(Exception):
    """A field check failed; the message names the field, what it must be and what it is."""


def _fail(field: str, expected: str, value):
    shown = f" {value!r}" if isinstance(value, (int, float, str)) and len(repr(value)) < 40 else ""
    raise _Bad(f"field {field} must be {expected}, got {type(value).__name__}{shown}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(field, value):
    if not (_is_int(value) and value >= 0):
        _fail(field, "an integer >= 0", value)


def _optional_count(field, value):
    if value is not None:
        _count(field, value)


def _score(field, value):
    if value is not None and not (_is_real(value) and math.isfinite(value)):
        _fail(field, "a finite number or None", value)


def _real(field, value):
    if not _is_real(value):
        _fail(field, "a number", value)


def _dict(field, value, keys=()):
    if not isinstance(value, dict):
        _fail(field, "a dict", value)
    for key in keys:
        if key not in value:
            raise _Bad(f"field {field} lacks '{key}'")


def _tensor(field, value, dtype, numel=None, high=None):
    if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.dim() != 1:
        _fail(field, f"a 1-d {dtype} tensor", value)
    if numel is not None and value.numel() != numel:
        raise _Bad(f"field {field} must hold {numel} values, holds {value.numel()}")
    if high is not None and value.numel() and not (0 <= int(value.min()) and int(value.max()) < high):
        raise _Bad(f"field {field} holds values outside 0..{high - 1}")


# ----------------------------------------------------------------------------- one per field

def _model(value):
    _dict("model", value, ("name", "kwargs"))
    if not isinstance(value["name"], str) or not value["name"]:
        _fail("model.name", "a model name (a non-empty string)", value["name"])
    kwargs = value["kwargs"]
    if not isinstance(kwargs, dict):
        _fail("model.kwargs", "a dict of option names to values", kwargs)
    for key, arg in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            _fail("model.kwargs", "a dict keyed by option names", key)
        if arg is not None and not isinstance(arg, (bool, int, float, str)):
            _fail(f"model.kwargs.{key}", "a number, string, bool or None", arg)


def _state_dict(value):
    _dict("state_dict", value)
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            _fail(f"state_dict[{key!r}]", "a tensor under a string key", tensor)


def _config(value):
    from cnnlab.train.config import TrainConfig

    _dict("config", value)
    problem = TrainConfig.type_problem(value)
    if problem:
        raise _Bad(f"field config.{problem}")


def _run_id(value):
    if not (isinstance(value, str) and _RUN_ID.fullmatch(value)):
        _fail("run_id", "32 hex digits (a uuid4)", value)


def _is_step_pair(item) -> bool:
    return (isinstance(item, (list, tuple)) and len(item) == 2 and _is_int(item[0])
            and _is_real(item[1]))


def _history(value):
    _dict("history", value)
    for key in _HISTORY_PAIRS:
        pairs = value.get(key, [])
        if not isinstance(pairs, (list, tuple)) or not all(map(_is_step_pair, pairs)):
            _fail(f"history.{key}", "a list of [step, number] pairs", pairs)
    epoch_losses = value.get("train_epoch_losses", [])
    if not isinstance(epoch_losses, (list, tuple)) or not all(map(_is_real, epoch_losses)):
        _fail("history.train_epoch_losses", "a list of numbers", epoch_losses)
    _score("history.best_score", value.get("best_score"))
    _optional_count("history.best_step", value.get("best_step"))


def _epoch_partial(value):
    _dict("epoch_partial", value, ("loss_sum", "samples"))
    _real("epoch_partial.loss_sum", value["loss_sum"])
    _count("epoch_partial.samples", value["samples"])


def _optimizer(value):
    _dict("optimizer", value, ("state", "param_groups"))
    _dict("optimizer.state", value["state"])
    groups = value["param_groups"]
    if not isinstance(groups, list) or not groups:
        _fail("optimizer.param_groups", "a non-empty list", groups)
    for group in groups:
        if not (isinstance(group, dict) and isinstance(group.get("params"), list)
                and all(map(_is_int, group["params"]))):
            _fail("optimizer.param_groups", "a list of dicts with integer 'params'", group)


def _scheduler(value):
    if value is not None:
        _dict("scheduler", value)


def _rng(value):
    _dict("rng", value, ("python", "numpy", "torch"))
    py, nps = value["python"], value["numpy"]
    _dict("rng.python", py, ("version", "state", "gauss_next"))
    if not _is_int(py["version"]):
        _fail("rng.python.version", "an integer", py["version"])
    _tensor("rng.python.state", py["state"], torch.int64, _MT_WORDS + 1, 2**32)
    if py["gauss_next"] is not None:
        _real("rng.python.gauss_next", py["gauss_next"])
    _dict("rng.numpy", nps, ("name", "keys", "pos", "has_gauss", "cached_gaussian"))
    if nps["name"] != "MT19937":
        _fail("rng.numpy.name", "'MT19937'", nps["name"])
    _tensor("rng.numpy.keys", nps["keys"], torch.int64, _MT_WORDS, 2**32)
    if not (_is_int(nps["pos"]) and 0 <= nps["pos"] <= _MT_WORDS):
        _fail("rng.numpy.pos", f"an integer in 0..{_MT_WORDS}", nps["pos"])
    _count("rng.numpy.has_gauss", nps["has_gauss"])
    _real("rng.numpy.cached_gaussian", nps["cached_gaussian"])
    generator_bytes = torch.get_rng_state().numel()
    _tensor("rng.torch", value["torch"], torch.uint8, generator_bytes)
    if "data" in value:
        _tensor("rng.data", value["data"], torch.uint8, generator_bytes)
    if "augment" in value:  # the CPU generator of the batch transform's crops and flips
        _tensor("rng.augment", value["augment"], torch.uint8, generator_bytes)
    cuda = value.get("cuda", [])
    if not isinstance(cuda, list):
        _fail("rng.cuda", "a list of tensors", cuda)
    for state in cuda:
        _tensor("rng.cuda", state, torch.uint8)


def _grad_scaler(value):
    """fp16 training's GradScaler state: None, or a dict of numbers (scale, growth tracker)."""
    if value is None:
        return
    _dict("grad_scaler", value)
    for key, number in value.items():
        if not _is_real(number):
            _fail(f"grad_scaler.{key}", "a number", number)


def _skipped_steps(value):
    if not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value):
        _fail("skipped_steps", "a list of step numbers", value)


def _distributed(value):
    """The data-parallel run that wrote it (train/distributed.py `DistContext.describe`)."""
    _dict("distributed", value, ("world_size", "backend", "launch_id"))
    if not (_is_int(value["world_size"]) and value["world_size"] >= 1):
        _fail("distributed.world_size", "an integer >= 1", value["world_size"])
    for key in ("backend", "launch_id"):
        if not isinstance(value[key], str):
            _fail(f"distributed.{key}", "a string", value[key])


def _algorithms(value):
    """The fast operators' algorithm per problem key (train/algorithms.py, `autotune.pin`'s form:
    {"conv2d float32 nchw x64x6x14x14 ...": {"algorithm": "unfold", "source": "rule"}})."""
    from cnnlab.ops import fast_conv, fast_pool

    _dict("algorithms", value)
    names = (*fast_conv.ALGORITHMS, *fast_pool.AVG_ALGORITHMS)
    for key, choice in value.items():
        if not (isinstance(key, str) and key.startswith(("conv2d ", "pool2d:"))):
            _fail("algorithms", "a dict keyed by autotune problem keys ('conv2d ...')", key)
        if not isinstance(choice, dict):
            _fail(f"algorithms[{key!r}]", "a dict with 'algorithm' and 'source'", choice)
        if choice.get("algorithm") not in names:
            _fail(f"algorithms[{key!r}].algorithm", f"one of {', '.join(names)}",
                  choice.get("algorithm"))
        if choice.get("source") not in _SOURCES:
            _fail(f"algorithms[{key!r}].source", f"one of {', '.join(_SOURCES)}",
                  choice.get("source"))


def _resumable(value):
    if not isinstance(value, bool):
        _fail("resumable", "True or False", value)


_CHECKS = {
    "model": _model, "state_dict": _state_dict, "config": _config, "run_id": _run_id,
    "step": lambda v: _count("step", v), "epoch": lambda v: _count("epoch", v),
    "best_score": lambda v: _score("best_score", v),
    "best_step": lambda v: _optional_count("best_step", v),
    "history": _history, "epoch_partial": _epoch_partial, "optimizer": _optimizer,
    "scheduler": _scheduler, "rng": _rng, "resumable": _resumable, "grad_scaler": _grad_scaler,
    "epoch_step": lambda v: _count("epoch_step", v),
    "steps_per_epoch": lambda v: _count("steps_per_epoch", v),
    "skipped_steps": _skipped_steps, "distributed": _distributed, "algorithms": _algorithms,
}


# ----------------------------------------------------------------------------- entry points

def _checked(where, run):
    try:
        run()
    except _Bad as err:
        raise CorruptCheckpointError(f"{where} is not a usable cnnlab checkpoint: {err}") from None


def check_fields(payload: dict, where) -> None:
    """Check every known field `payload` holds (fields it lacks are checked where they are needed)."""
    def run():
        if payload.get("version") != 1:
            _fail("version", "1", payload.get("version"))
        for key, check in _CHECKS.items():
            if key in payload:
                check(payload[key])
    _checked(where, run)


def check_model(payload: dict, where) -> tuple[str, dict]:
    """-> (model name, kwargs) of a checkpoint that holds a model cnnlab builds, with its weights."""
    from cnnlab.models import MODEL_NAMES

    def run():
        for key in ("model", "state_dict"):
            if key not in payload:
                raise _Bad(f"it lacks field {key}: it does not say which model it holds")
        if payload["model"]["name"] not in MODEL_NAMES:
            _fail("model.name", f"one of {', '.join(MODEL_NAMES)}", payload["model"]["name"])
    _checked(where, run)
    return payload["model"]["name"], dict(payload["model"]["kwargs"])


def check_resumable(payload: dict, where) -> None:
    """The fields a resumable checkpoint holds, present and consistent with each other."""
    def run():
        for key in RESUME_FIELDS:
            if key not in payload:
                raise _Bad(f"it lacks field {key}, which a resumable checkpoint holds")
        steps, epoch_step = payload["steps_per_epoch"], payload["epoch_step"]
        # epoch_step == steps: stopped after an epoch's last step, before its end-of-epoch work
        if steps and not (epoch_step <= steps
                          and payload["step"] == payload["epoch"] * steps + epoch_step):
            raise _Bad(f"fields step {payload['step']}, epoch {payload['epoch']}, epoch_step "
                       f"{epoch_step} and steps_per_epoch {steps} disagree")
    _checked(where, run)
