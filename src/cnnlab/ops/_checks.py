"""Argument checks shared by every implementation of `conv2d` and `pool2d`.

Each check raises `OpError` (a `ValueError`, via `cnnlab.errors.UserError`) whose message names the
operator and says what was expected and what was given, e.g.
``conv2d: expected weight with 3 input channels to match x [2, 3, 8, 8], got weight [4, 2, 3, 3]``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cnnlab.errors import UserError

IMPLS = ("reference", "fast", "native")
POOL_MODES = ("max", "avg")


class OpError(UserError):
    """Bad arguments to an operator of `cnnlab.ops`; the message starts with the operator's name."""

    def __init__(self, op: str, message: str):
        super().__init__(f"{op}: {message}")
        self.op = op


def _shape(t) -> list[int]:
    return list(t.shape)


def pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints -> (h, w), each >= minimum."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = value
    elif isinstance(value, (list, tuple)):
        raise OpError(op, f"expected {name} as an int or a pair of ints, got {value!r}")
    else:
        h = w = value
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int):
            raise OpError(op, f"expected {name} as an int or a pair of ints, got {value!r}")
        if v < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise OpError(op, f"expected {kind} {name}, got {value!r}")
    return h, w


def check_impl(op: str, impl: str) -> None:
    if impl not in IMPLS:
        raise OpError(op, f"expected impl in {IMPLS}, got {impl!r}")


def _check_tensor(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise OpError(op, f"expected {name} as a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise OpError(op, f"expected a floating-point {name}, got dtype {t.dtype}")


class ConvArgs(NamedTuple):
    x: torch.Tensor        # [B,D,M,N]
    weight: torch.Tensor   # [P,D,U,V]
    bias: torch.Tensor | None  # [P]
    stride: tuple[int, int]
    padding: tuple[int, int]
    single_channel: bool   # the lab's [B,M,N] x [U,V] form: squeeze the channel dim on return


def check_conv(x, weight, bias, stride, padding, impl) -> ConvArgs:
    """Validate conv2d's arguments and bring the lab's single-channel form to 4-D."""
    op = "conv2d"
    check_impl(op, impl)
    _check_tensor(op, "x", x)
    _check_tensor(op, "weight", weight)
    single = False
    if x.dim() == 3 and weight.dim() == 2:
        # The lab's first Conv2D: x [B,M,N] with one [U,V] kernel (and an optional scalar bias).
        single = True
        x, weight = x.unsqueeze(1), weight[None, None]
        if bias is not None and isinstance(bias, torch.Tensor) and bias.dim() == 0:
            bias = bias.reshape(1)
    elif x.dim() != 4 or weight.dim() != 4:
        raise OpError(op, "expected x [B,D,M,N] with weight [P,D,U,V] (or x [B,M,N] with a "
                          f"[U,V] kernel), got x {_shape(x)} and weight {_shape(weight)}")
    if weight.shape[1] != x.shape[1]:
        raise OpError(op, f"expected weight with {x.shape[1]} input channels to match x "
                          f"{_shape(x)}, got weight {_shape(weight)}")
    if weight.dtype != x.dtype:
        raise OpError(op, f"expected weight of x's dtype {x.dtype}, got {weight.dtype}")
    if weight.device != x.device:
        raise OpError(op, f"expected weight on x's device {x.device}, got {weight.device}")
    if min(weight.shape) == 0 or x.shape[0] == 0 or x.shape[1] == 0:
        raise OpError(op, f"expected non-empty x and weight, got x {_shape(x)} and weight "
                          f"{_shape(weight)}")
    if bias is not None:
        _check_tensor(op, "bias", bias)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise OpError(op, f"expected bias [{weight.shape[0]}] (one per output channel), "
                              f"got bias {_shape(bias)}")
        if bias.dtype != x.dtype or bias.device != x.device:
            raise OpError(op, f"expected bias of x's dtype {x.dtype} on {x.device}, got "
                              f"{bias.dtype} on {bias.device}")
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    _check_window(op, "kernel", x, tuple(weight.shape[2:]), padding)
    return ConvArgs(x, weight, bias, stride, padding, single)


def _check_window(op, what, x, kernel, padding) -> None:
    m, n = x.shape[-2] + 2 * padding[0], x.shape[-1] + 2 * padding[1]
    if kernel[0] > m or kernel[1] > n:
        raise OpError(op, f"expected a {what} no larger than the padded input {m}x{n} "
                          f"(x {_shape(x)}, padding {padding}), got {kernel[0]}x{kernel[1]}")


class PoolArgs(NamedTuple):
    x: torch.Tensor        # [B,C,M,N]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    unbatched: bool        # x was [C,M,N]: squeeze the batch dim on return


def check_pool(x, kernel_size, stride, padding, mode, impl) -> PoolArgs:
    """Validate pool2d's arguments; stride defaults to the kernel size (non-overlapping windows)."""
    op = "pool2d"
    check_impl(op, impl)
    if mode not in POOL_MODES:
        raise OpError(op, f"expected mode in {POOL_MODES}, got {mode!r}")
    _check_tensor(op, "x", x)
    unbatched = x.dim() == 3
    if x.dim() not in (3, 4):
        raise OpError(op, f"expected x [B,C,M,N] (or [C,M,N]), got x {_shape(x)}")
    if unbatched:
        x = x.unsqueeze(0)
    if x.numel() == 0:
        raise OpError(op, f"expected a non-empty x, got x {_shape(x)}")
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        # Wider padding would allow windows made of padding only (torch forbids it too).
        raise OpError(op, f"expected padding at most half the kernel size {kernel}, got {padding}")
    _check_window(op, "kernel_size", x, kernel, padding)
    return PoolArgs(x, kernel, stride, padding, unbatched)


def out_size(m: int, u: int, p: int, s: int) -> int:
    """Output length along one spatial dim: M' = (M + 2P - U) // S + 1."""
    return (m + 2 * p - u) // s + 1
