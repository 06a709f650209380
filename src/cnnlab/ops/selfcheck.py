"""Equivalence checks of our operators against torch's, for `cnnlab check`.

`run_op_checks()` runs the fast operators (every algorithm the selector can pick) and the
reference loops (small shapes only: they are slow) against torch.nn.functional on the same seeded
inputs, comparing outputs and the gradients of x, weight and bias. Float64 sweeps use a tight
tolerance (only rounding differs); the float32 checks on the model's own layer shapes use a
looser one (sums of thousands of float32 products). Tolerances are relative to the largest
absolute value of torch's result (at least 1), reported as absolute figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab import ops
from cnnlab.ops import autotune, fast_conv

TOL64 = 1e-9
TOL32 = 1e-4

# (B, D, P, M, N, U, V, stride, padding): odd sizes, rectangular kernels, stride > kernel, batch 1,
# a kernel bigger than the unpadded input, and shapes that hit each fast algorithm.
CONV_CASES = [
    (2, 3, 4, 9, 9, 3, 3, 1, 1),
    (1, 2, 3, 8, 7, 3, 2, 2, 1),
    (2, 3, 2, 7, 9, 2, 3, (3, 2), (2, 1)),
    (2, 2, 3, 9, 9, 1, 1, 3, 0),          # stride > kernel (pointwise)
    (2, 3, 4, 5, 5, 5, 5, 1, 0),          # whole-image kernel (matmul), as LeNet's conv5
    (2, 4, 3, 1, 1, 3, 3, 1, 1),          # 3x3 on 1x1 with padding 1 (cropped to 1x1: matmul)
    (2, 4, 3, 2, 2, 3, 3, 2, 1),          # ResNet's 2x2 -> 1x1 stride-2 stage
    (2, 3, 2, 6, 6, 7, 7, 2, 3),          # the 7x7/2 stem, kernel larger than x
    (2, 4, 9, 8, 8, 3, 3, 1, 1),          # P > 2D >= 8: unfold's dx by shifted products
]
QUICK_CONV_CASES = CONV_CASES[:5]
REFERENCE_CONV_CASES = [(2, 2, 3, 6, 6, 3, 3, 1, 1), (1, 2, 2, 7, 6, 3, 2, 2, 1)]

# (B, C, M, N, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 8, 8, 2, None, 0),
    (2, 3, 9, 7, 3, 2, 1),                # ResNet's 3x3/2 max-pool with padding 1, odd sizes
    (1, 2, 7, 8, (2, 3), (3, 1), (1, 1)),
]
REFERENCE_POOL_CASES = [(2, 2, 6, 6, 2, None, 0), (1, 2, 7, 7, 3, 2, 1)]

# Layer shapes of the models (D, P, kernel, stride, padding, input size), float32, batch 2.
MODEL_CONV_SHAPES = [
    (1, 6, 5, 1, 0, 32), (6, 16, 5, 1, 0, 14), (16, 120, 5, 1, 0, 5),
    (1, 64, 7, 2, 3, 32), (64, 64, 3, 1, 1, 8), (64, 128, 3, 2, 1, 8), (64, 128, 1, 2, 0, 8),
    (256, 512, 3, 2, 1, 2), (512, 512, 3, 1, 1, 1), (3, 64, 3, 1, 1, 32),
]


def _result(name, diff, tol):
    return {"name": name, "max_abs_diff": float(diff), "tolerance": tol,
            "passed": bool(diff <= tol)}


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _conv_case(b, d, p, m, n, u, v, stride, padding, dtype, gen):
    x = torch.randn(b, d, m, n, dtype=dtype, generator=gen)
    w = torch.randn(p, d, u, v, dtype=dtype, generator=gen) / (d * u * v) ** 0.5
    bias = torch.randn(p, dtype=dtype, generator=gen)
    return x, w, bias


def _grads(fn, inputs, gen):
    """Output and gradients of fn(*inputs) for a seeded upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    g = torch.randn(y.shape, dtype=y.dtype, generator=gen)
    return [y.detach(), *torch.autograd.grad(y, leaves, g)]


def _compare(name, ours, theirs, inputs, tol, seed):
    """Two checks (output; gradients); the tolerance scales with the largest reference value."""
    a = _grads(ours, inputs, torch.Generator().manual_seed(seed))
    b = _grads(theirs, inputs, torch.Generator().manual_seed(seed))

    def scaled(ts):
        return tol * max(1.0, max(t.abs().max().item() for t in ts))
    return [_result(f"{name}: output", _max_diff(a[:1], b[:1]), scaled(b[:1])),
            _result(f"{name}: gradients", _max_diff(a[1:], b[1:]), scaled(b[1:]))]


def _conv_label(case):
    b, d, p, m, n, u, v, s, pad = case
    return f"x[{b},{d},{m},{n}] w[{p},{d},{u},{v}] s={s} p={pad}"


def _conv_checks(cases, impl, dtype, tol, gen):
    out = []
    for i, case in enumerate(cases):
        b, d, p, m, n, u, v, s, pad = case
        inputs = _conv_case(b, d, p, m, n, u, v, s, pad, dtype, gen)
        algos = [None]
        if impl == "fast":   # every algorithm that applies (the selector picks one of them)
            algos = _applicable(inputs[0], inputs[1], s, pad)
        for algo in algos:
            def ours(x, w, bias, algo=algo):
                if algo is None:
                    return ops.conv2d(x, w, bias, s, pad, impl=impl)
                return fast_conv.conv2d(x, w, bias, _pair(s), _pair(pad), algo=algo)
            label = f"conv2d {impl}{'/' + algo if algo else ''} vs torch, {_conv_label(case)}"
            out += _compare(label, ours, lambda x, w, bias: F.conv2d(x, w, bias, s, pad),
                            inputs, tol, i)
    return out


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _applicable(x, w, stride, padding):
    geo = fast_conv.geometry(x.shape, w.shape, _pair(stride), _pair(padding))
    return [a for a in fast_conv.ALGORITHMS if fast_conv.applies(a, x.shape, geo)]


def _pool_checks(cases, impl, gen):
    out = []
    for i, (b, c, m, n, k, s, pad) in enumerate(cases):
        x = torch.randn(b, c, m, n, dtype=torch.float64, generator=gen)
        for mode in ("max", "avg"):
            def theirs(t, k=k, s=s, pad=pad, mode=mode):
                if mode == "max":
                    return F.max_pool2d(t, k, s, pad)
                return F.avg_pool2d(t, k, s, pad, count_include_pad=True)
            label = f"pool2d {impl} {mode} vs torch, x[{b},{c},{m},{n}] k={k} s={s} p={pad}"
            out += _compare(label,
                            lambda t, k=k, s=s, pad=pad, mode=mode:
                                ops.pool2d(t, k, s, pad, mode=mode, impl=impl),
                            theirs, [x], TOL64, i)
    return out


def _model_shape_checks(gen, quick):
    out = []
    shapes = MODEL_CONV_SHAPES[:4] if quick else MODEL_CONV_SHAPES
    for i, (d, p, k, s, pad, m) in enumerate(shapes):
        case = (2, d, p, m, m, k, k, s, pad)
        inputs = _conv_case(*case, torch.float32, gen)
        label = f"conv2d fast vs torch (float32, model layer), {_conv_label(case)}"
        out += _compare(label, lambda x, w, b: ops.conv2d(x, w, b, s, pad, impl="fast"),
                        lambda x, w, b: F.conv2d(x, w, b, s, pad), inputs, TOL32, i)
    return out


def run_op_checks(quick: bool = False) -> list[dict]:
    """Every operator check: [{"name", "max_abs_diff", "tolerance", "passed"}, ...].

    Every algorithm is checked by name; where the selector picks, it picks as the autotuner's
    "cached" mode does (the cache, else the rules): checks need no timing."""
    with autotune.using("cached"):
        return _all_checks(quick)


def _all_checks(quick):
    gen = torch.Generator().manual_seed(0)
    checks = _conv_checks(QUICK_CONV_CASES if quick else CONV_CASES, "fast", torch.float64,
                          TOL64, gen)
    checks += _conv_checks(REFERENCE_CONV_CASES[:1] if quick else REFERENCE_CONV_CASES,
                           "reference", torch.float64, TOL64, gen)
    checks += _pool_checks(POOL_CASES[:2] if quick else POOL_CASES, "fast", gen)
    checks += _pool_checks(REFERENCE_POOL_CASES[:1] if quick else REFERENCE_POOL_CASES,
                           "reference", gen)
    checks += _model_shape_checks(gen, quick)
    return checks
