"""The autotuner's keys: the machine part and the problem part, as tuples and as text.

Machine: device type and model, torch threads ("cpu AMD EPYC, 2 threads", "cuda NVIDIA H100").
Problem: op, dtype, memory layout, input shape with the batch rounded up to a power of two,
weight shape (or pooling window), stride, padding and the gradients needed
("conv2d float32 nchw x64x6x14x14 w16x6x5x5 s1x1 p0x0 grad:x,w,b"). Tuples are built on every
call (cheap); text only on a miss, for the cache, pins and `decisions()`.
"""

from __future__ import annotations

import functools

import torch


def bucket(b: int) -> int:
    """The batch size rounded up to a power of two: 40 -> 64 (an epoch's last batch)."""
    return 1 << (b - 1).bit_length()


def layout(t) -> str:
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and \
        not t.is_contiguous()
    return "nhwc" if last else "nchw"


def grads_needed(*tensors) -> tuple:
    """Which of (x, w, b) will get a gradient: ("x", "w", "b") or a part; () without grad mode."""
    if not torch.is_grad_enabled():
        return ()
    return tuple(n for n, t in zip("xwb", tensors) if t is not None and t.requires_grad)


def conv_problem(x, weight, bias, stride, padding) -> tuple:
    return ("conv2d", x.dtype, layout(x), (bucket(x.shape[0]), *x.shape[1:]),
            tuple(weight.shape), tuple(stride), tuple(padding), grads_needed(x, weight, bias))


def conv_key(x, weight, bias=None, stride=(1, 1), padding=(0, 0)) -> str:
    """The problem key of conv2d(x, weight, bias, stride, padding) as called now (grad mode and
    requires_grad included), as `decisions()` and `pin` spell it."""
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    return problem_text(conv_problem(x, weight, bias, pair(stride), pair(padding)))


def pool_problem(x, kernel, stride, padding, mode_name) -> tuple:
    return (f"pool2d:{mode_name}", x.dtype, layout(x), (bucket(x.shape[0]), *x.shape[1:]),
            tuple(kernel), tuple(stride), tuple(padding), grads_needed(x))


def pool_key(x, kernel, stride, padding, mode_name) -> str:
    """The problem key of a pool2d call (kernel, stride, padding as (h, w) pairs)."""
    return problem_text(pool_problem(x, kernel, stride, padding, mode_name))


def _dims(shape) -> str:
    return "x".join(map(str, shape))


@functools.lru_cache(maxsize=1024)
def problem_text(problem: tuple) -> str:
    op, dtype, layout, xs, *rest, grads = problem
    grad = "grad:" + (",".join(grads) or "none")
    dt = str(dtype).replace("torch.", "")
    if op == "conv2d":
        ws, (sh, sw), (ph, pw) = rest
        return f"conv2d {dt} {layout} x{_dims(xs)} w{_dims(ws)} s{sh}x{sw} p{ph}x{pw} {grad}"
    kernel, stride, padding = rest
    return (f"{op} {dt} {layout} x{_dims(xs)} k{_dims(kernel)} s{_dims(stride)} "
            f"p{_dims(padding)} {grad}")


@functools.lru_cache(maxsize=16)
def device_name(kind: str, index) -> str:
    if kind == "cuda":
        return f"cuda {torch.cuda.get_device_name(index)}"
    if kind == "cpu":
        from cnnlab.runinfo import cpu_model
        return f"cpu {cpu_model()}"
    return kind


def machine_of(device) -> tuple:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return device.type, device.index, threads


def machine_text(machine) -> str:
    kind, index, threads = machine
    name = device_name(kind, index)
    return f"{name}, {threads} threads" if kind == "cpu" else name
