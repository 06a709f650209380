"""Loading a state dict into a model with an error that says exactly what does not fit.

`torch.nn.Module.load_state_dict` reports mis-shaped keys one by one in a long RuntimeError and
raises on them even with `strict=False`. `load_state_strict` compares keys and shapes first and
either raises one readable `UserError` (strict) or loads only what fits and says what it skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cnnlab.errors import UserError

_SHOW = 4  # keys listed per category in a message; the rest are counted


@dataclass
class LoadReport:
    """What a state-dict load did: keys loaded, and keys missing / unexpected / mis-shaped."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # in the model, not in the state dict
    unexpected: list[str] = field(default_factory=list)   # in the state dict, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file, model)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line: counts and the first few keys of each kind."""
        parts = []
        if self.missing:
            parts.append(f"{_count(self.missing, 'missing key')} ({_names(self.missing)})")
        if self.unexpected:
            parts.append(f"{_count(self.unexpected, 'unexpected key')} ({_names(self.unexpected)})")
        if self.mismatched:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:_SHOW]]
            more = len(self.mismatched) - len(shown)
            parts.append(f"{_count(self.mismatched, 'mis-shaped key')} ("
                         + "; ".join(shown) + (f"; and {more} more" if more else "") + ")")
        return "; ".join(parts) if parts else "all keys match"


def compare_state(model: torch.nn.Module, state_dict: dict) -> LoadReport:
    """Compare `state_dict` with `model.state_dict()` by key and shape; loads nothing."""
    own = model.state_dict()
    report = LoadReport()
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(own[key].shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else (type(value).__name__,)
            report.mismatched.append((key, shape, tuple(own[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state_dict]
    return report


def load_state_strict(model: torch.nn.Module, state_dict: dict, strict: bool = True,
                      source: str = "checkpoint") -> LoadReport:
    """Load `state_dict` into `model` -> LoadReport.

    strict=True: any missing, unexpected or mis-shaped key raises `UserError` listing them all by
    kind (nothing is loaded). strict=False: loads only the keys whose shapes match and returns the
    report of what was skipped (`report.describe()`).
    """
    if not isinstance(state_dict, dict):
        raise UserError(f"{source} holds no state dict (got {type(state_dict).__name__})")
    report = compare_state(model, state_dict)
    name = type(model).__name__
    if not report.ok and strict:
        raise UserError(
            f"{source} does not fit model {name}: {report.describe()}; it was probably saved from "
            "another model (load it non-strictly only if you mean to transfer the matching keys)"
        )
    if strict:
        model.load_state_dict(state_dict, strict=True)
    else:
        fitting = {key: state_dict[key] for key in report.loaded}
        model.load_state_dict(fitting, strict=False)
    return report


def _count(items, what: str) -> str:
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}"


def _names(keys) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")
