"""`resolve_device(name)`: the torch device a run asks for ("auto", "cpu", "cuda", "cuda:N"),
checked. A module of its own: the config (recipes' "auto" settings) and the Runner both need it."""

from __future__ import annotations

import torch

from cnnlab.errors import UserError


def resolve_device(device="auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; "cpu", "cuda" or "cuda:N" as given. Anything
    else, or a GPU that is not there, is a UserError."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise UserError(f"unknown device {text!r}: expected auto, cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {text!r} requested but no CUDA GPU is available (use --device cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"device {text!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(text)
