"""Fast 2-D convolution from tensor building blocks, with a hand-written backward.

Formula 5.13 with stride S and zero padding, in index form (x already padded):

    y[b,p,i,j] = sum_{d,u,v} w[p,d,u,v] * x[b, d, S*i+u, S*j+v] + bias[p]

Gathering every window into a column ("im2col") turns this into one matrix product
    Y = W[P, K] @ cols[K, R]        R = B*M'*N' output pixels, K = D*U*V taps,
and differentiating that product gives the backward (the chain rule, written out):
    dW = dY @ cols^T                each tap's input times the output gradient, summed over R
    dcols = W^T @ dY, dx = col2im   every window returns its gradient where it read it
    dbias = dY summed over R.
With stride 1, dx is itself a convolution: dY zero-padded, correlated with the kernel flipped
and transposed (dx[m] = sum_u dY[m - u] w[u]), so it reuses im2col and needs no scatter. When
P > 2D that correlation is the bigger product; "unfold" then computes dx as U*V shifted
products if D >= 4 (see _conv_dx), else by col2im.

Never calls torch's convolution kernels: only copies into padded buffers, as_strided window views,
matmul, index_add and sums. The batch is processed in chunks whose buffers are allocated once per
call and reused; large columns are recomputed for dW rather than stored (a copy is cheaper than
keeping U*V times the input alive), small ones (<= 10 MiB, the whole batch) are kept. dW and dx
are computed separately (`weight_grad`, `input_grad` of each algorithm), each in its own chunks.

Algorithms (`choose_algorithm`; any can be forced with `algo=` where it applies):
- "matmul"   the cropped kernel covers the whole padded input: y = x_flat @ W^T on a view of x.
- "shift"    stride 1: U*V products over shifted row blocks of the flattened padded image, no
             im2col at all (see _conv_shift): wide maps with 16-32 channels.
- "unfold"   per-image columns [n, K, M'*N'] in F.unfold's layout (runs of N' pixels), batched
             products, NCHW in and out: few channels or wide maps (see _conv_unfold).
- "im2col"   channels-last rows [R, K] (runs of D channels): for channels-last inputs and small
             feature maps with many channels (see _conv_rows).
- "pointwise" a 1x1 kernel on channels-last rows: no window gather, dx without scatter-adds.
Before any of them, kernel taps that only ever read padding are cropped away (`Geometry`).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _conv_matmul, _conv_rows, _conv_shift, _conv_unfold, autotune
from ._conv_common import Geometry, geometry

ALGORITHMS = ("matmul", "shift", "unfold", "im2col", "pointwise")
_IMPL = {"matmul": _conv_matmul, "shift": _conv_shift, "unfold": _conv_unfold,
         "im2col": _conv_rows, "pointwise": _conv_rows}
# Algorithms whose dW and dx both read dY as channels-last rows: when both are needed, dY is
# transposed once for the two rather than chunk by chunk in each.
_DY_CHANNELS_LAST = ("im2col", "pointwise")

# Crossovers between the algorithms, measured on every model shape at batch 64 with 1 and 2
# threads (the figures: benchmarks/README.md). For NCHW inputs "unfold" copies runs of N' output
# pixels, "im2col" runs of D channels plus NCHW <-> NHWC transposes: unfold while D <= 4 N', or
# 8 N' on maps at least 16 wide; im2col on small maps with many channels.
UNFOLD_CHANNELS_PER_PIXEL = 4
UNFOLD_CHANNELS_PER_PIXEL_WIDE = 8          # for N' >= SHIFT_MIN_WIDTH
# "shift" skips im2col but multiplies with K = D per tap: it wins where the columns copy costs as
# much as the products (wide maps, 16..32 channels); few channels make its products thin, and at
# 64 channels the CPUs measured disagree (benchmarks/README.md).
SHIFT_CHANNELS = (16, 32)
SHIFT_MIN_WIDTH = 16


def choose_algorithm(x_shape, w_shape, geo: Geometry, x_channels_last: bool = False) -> str:
    """Pick the cheapest exact algorithm for this geometry (see the module docstring)."""
    if geo.kernel == geo.padded(*x_shape[-2:]):
        return "matmul"
    if (geo.stride == (1, 1) and geo.kernel != (1, 1) and geo.out[1] >= SHIFT_MIN_WIDTH
            and SHIFT_CHANNELS[0] <= w_shape[1] <= SHIFT_CHANNELS[1]):
        return "shift"
    per_pixel = UNFOLD_CHANNELS_PER_PIXEL_WIDE if geo.out[1] >= SHIFT_MIN_WIDTH else \
        UNFOLD_CHANNELS_PER_PIXEL
    if not x_channels_last and w_shape[1] <= per_pixel * geo.out[1]:
        return "unfold"
    if geo.kernel == (1, 1):
        return "pointwise"
    return "im2col"


def applies(algo: str, x_shape, geo: Geometry) -> bool:
    """Whether `algo` computes this geometry (unfold and im2col compute any)."""
    if algo == "matmul":
        return geo.kernel == geo.padded(*x_shape[-2:])
    if algo == "pointwise":
        return geo.kernel == (1, 1)
    if algo == "shift":
        return geo.stride == (1, 1)
    return algo in ALGORITHMS


class _Conv2d(torch.autograd.Function):
    """Each algorithm module has forward(x, weight, bias, geo) -> (y, kept_columns),
    weight_grad(x, weight, dY, geo, kept_columns) -> dW and input_grad(x, weight, dY, geo) -> dx;
    kept_columns is batch-first ([B, ...]) or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, geo, algo):
        ctx.save_for_backward(x, weight)
        ctx.geo, ctx.algo, ctx.has_bias = geo, algo, bias is not None
        y, columns = _IMPL[algo].forward(x, weight, bias, geo)
        ctx.kept_columns = columns if ctx.needs_input_grad[1] else None   # only dW reads them
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        impl = _IMPL[ctx.algo]
        gb = gy.sum(dim=(0, 2, 3)) if need_b and ctx.has_bias else None
        if need_x and need_w and ctx.algo in _DY_CHANNELS_LAST:
            gy = gy.contiguous(memory_format=torch.channels_last)
        gw = impl.weight_grad(x, weight, gy, ctx.geo, ctx.kept_columns) if need_w else None
        gx = impl.input_grad(x, weight, gy, ctx.geo) if need_x else None
        return gx, gw, gb, None, None


def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), algo=None):
    """x [B,D,M,N], weight [P,D,U,V], bias [P] or None -> [B,P,M',N'], M' = (M + 2P - U) // S + 1.

    Arguments are assumed valid and 4-D (`cnnlab.ops.conv2d` checks them). `algo` forces one of
    ALGORITHMS where it applies; None lets the autotuner choose (measured, or these rules).
    """
    geo = geometry(x.shape, weight.shape, stride, padding)
    if algo is None:
        algo = autotune.conv_algorithm(x, weight, bias, stride, padding, geo, ALGORITHMS,
                                       applies, choose_algorithm, _Conv2d.apply)
    elif algo not in ALGORITHMS:
        raise ValueError(f"conv2d: expected algo in {ALGORITHMS}, got {algo!r}")
    elif not applies(algo, x.shape, geo):
        raise ValueError(f"conv2d: algo {algo!r} does not apply to this shape")
    return _Conv2d.apply(x, weight, bias, geo, algo)
