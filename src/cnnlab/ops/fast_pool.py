"""Fast max and average pooling from tensor building blocks, with a hand-written backward.

    max: y[b,c,i,j] = max_{u,v} x[b,c,S*i+u,S*j+v]        (x padded with -inf)
    avg: y[b,c,i,j] = 1/(U*V) sum_{u,v} x[b,c,S*i+u,S*j+v]  (x padded with 0; the window size
         divides, padding included)

Backward (derived from the two formulas):
    max: dx at the one input that won each window (the first one on ties, as torch) gets dY;
    avg: every input of a window gets dY / (U*V).

Never calls torch's pooling kernels: pad, as_strided views, one copy, reductions, comparisons,
one lookup and one scatter-add.
The windows are copied tap-major, taps[t] = x[.., S*i+u, S*j+v] for t = (u,v), so that the copy
runs along a row of outputs and the reduction over the U*V taps is an elementwise max/sum of
whole planes (vectorised; reducing over a trailing window axis or a strided view is not).
Average pooling needs no copy of the windows at all: sums of strided views forward (separable:
columns, then rows); backward a contiguous broadcast copy over tiles (stride == kernel, no
padding: LeNet's pools), else adds through strided views.
Each choice was measured against the alternative: benchmarks/README.md.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import autotune
from ._checks import out_size
from ._conv_common import window_pixels

# Average pooling's backward paths: "tiles" (windows that tile the plane, see _AvgPool) or
# "views" (writes through strided window views, any geometry); the autotuner picks per shape.
AVG_ALGORITHMS = ("tiles", "views")


def _pad(x, padding, value):
    ph, pw = padding
    return x if ph == pw == 0 else F.pad(x, (pw, pw, ph, ph), value=value)


def _tap_view(x_pad, kernel, stride, out):
    """View [U, V, B, C, M', N'] of the windows of x_pad, tap-major (no copy)."""
    sb, sc, sm, sn = x_pad.stride()
    return x_pad.as_strided((*kernel, *x_pad.shape[:2], *out),
                         (sm, sn, sb, sc, sm * stride[0], sn * stride[1]))


def _taps(x, kernel, stride, padding, value):
    """The U*V taps of every window as one tensor [U*V, B, C, M', N'] (one copy), and M', N'."""
    out = (out_size(x.shape[2], kernel[0], padding[0], stride[0]),
           out_size(x.shape[3], kernel[1], padding[1], stride[1]))
    view = _tap_view(_pad(x, padding, value), kernel, stride, out)
    return view.reshape(kernel[0] * kernel[1], *x.shape[:2], *out), out


# The index tables depend only on the geometry (a dozen tiny tensor operations, a noticeable
# part of a LeNet-sized pool), so each geometry's are built once. Callers only read them.
@functools.lru_cache(maxsize=64)
def _winner_table(kernel, stride, out, width, device):
    """Offset of the winning tap in its window by rank = T - tap ([T+1], rank 0 unused), and the
    flat index of each window's first pixel [M'*N'] in the padded plane `width` wide."""
    pixels = window_pixels(kernel, stride, out, width, device).view(kernel[0] * kernel[1], -1)
    offset = (pixels[:, 0] - pixels[0, 0]).flip(0)
    return torch.cat([offset.new_zeros(1), offset]), pixels[0]


def _unpad(gx_pad, padding):
    ph, pw = padding
    if ph == pw == 0:
        return gx_pad
    return gx_pad[:, :, ph:gx_pad.shape[2] - ph, pw:gx_pad.shape[3] - pw].contiguous()


@functools.lru_cache(maxsize=16)
def _rank_weight(t, dtype, device):
    """T, T-1, ..., 1 as [T,1,1,1,1]: the weight of each tap that equals its window's max."""
    return torch.arange(t, 0, -1, dtype=dtype, device=device).view(t, 1, 1, 1, 1)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        taps, out = _taps(x, kernel, stride, padding, float("-inf"))
        # amax plus the winner found by comparisons, not taps.max(dim=0): torch's max-with-index
        # over a leading axis is not vectorised. Weighting the taps that equal the max by T,
        # T-1, ..., 1 (uint8) and taking the largest picks the FIRST winning tap on ties
        # (windows of ReLU zeros), which is where torch's max-pool sends the gradient too.
        y = taps.amax(dim=0)
        t = taps.shape[0]
        hit = taps >= y                      # == y (y is the max); >= is the faster kernel
        hit = hit.view(torch.uint8) if t < 256 else hit.int()      # no copy for windows < 16x16
        rank = hit.mul_(_rank_weight(t, hit.dtype, x.device)).amax(dim=0)
        ctx.save_for_backward(rank)          # T - tap index, one byte per output
        ctx.geo = x.shape, kernel, stride, padding, out
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        (rank,) = ctx.saved_tensors
        (b, c, m, n), kernel, stride, (ph, pw), out = ctx.geo
        width, size = n + 2 * pw, (m + 2 * ph) * (n + 2 * pw)
        # Input pixel of each window's winner = the window's first pixel + the winning tap's
        # offset (a lookup in a table of T+1 entries indexed by rank: index_select with int32
        # indices, faster than a 2-D gather), then one scatter-add of dY there (overlapping
        # windows may share a winner).
        table, first = _winner_table(kernel, stride, out, width, gy.device)
        L = out[0] * out[1]
        winner = table.index_select(0, rank.view(-1).int()).view(b * c, L) + first
        gx_pad = gy.new_zeros((b * c, size))
        gx_pad.scatter_add_(1, winner, gy.reshape(b * c, L))
        return _unpad(gx_pad.view(b, c, m + 2 * ph, width), (ph, pw)), None, None, None


def _tiled(kernel, stride, padding):
    """Windows that tile the plane: stride == kernel, no padding (both of LeNet's pools)."""
    return tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)


def _window_sum(x_pad, kernel, stride, out):
    """Sum over the U x V windows of x_pad as sums of strided views, separably: the V column taps
    first ([B,C,M,N']), then the U row taps of that ([B,C,M',N']). No copy of the windows:
    U+V-2 adds (faster than the tap copy + mean)."""
    (ku, kv), (sh, sw), (mo, no) = kernel, stride, out
    r = x_pad[..., :, 0:sw * (no - 1) + 1:sw]
    for v in range(1, kv):
        r = r + x_pad[..., :, v:v + sw * (no - 1) + 1:sw]
    y = r[..., 0:sh * (mo - 1) + 1:sh, :]
    for u in range(1, ku):
        y = y + r[..., u:u + sh * (mo - 1) + 1:sh, :]
    return y if ku * kv > 1 else y.clone()    # a 1x1 window: still a new tensor, not a view


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, algo):
        out = (out_size(x.shape[2], kernel[0], padding[0], stride[0]),
               out_size(x.shape[3], kernel[1], padding[1], stride[1]))
        ctx.geo, ctx.tiles = (x.shape, kernel, stride, padding, out), algo == "tiles"
        return _window_sum(_pad(x, padding, 0.0), kernel, stride, out).div_(kernel[0] * kernel[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        (b, c, m, n), (ku, kv), stride, (ph, pw), out = ctx.geo
        if ctx.tiles:
            # Tiles: dY/(U*V) repeated V times along a row, then each row U times, written
            # contiguously (a broadcast copy, faster than a write through the strided window
            # view); pixels left over by M % U, N % V get zeros.
            g = (gy / (ku * kv)).repeat_interleave(kv, dim=3)
            g = g[:, :, :, None, :].expand(b, c, out[0], ku, out[1] * kv)
            g = g.reshape(b, c, out[0] * ku, out[1] * kv)
            if g.shape[2:] != (m, n):
                g = F.pad(g, (0, n - g.shape[3], 0, m - g.shape[2]))
            return g, None, None, None, None
        gx_pad = gy.new_empty((b, c, m + 2 * ph, n + 2 * pw))
        if stride[0] >= ku and stride[1] >= kv:
            # Windows do not overlap: one broadcast write of dY/(U*V) into all of them at once.
            if stride != (ku, kv) or (m + 2 * ph, n + 2 * pw) != (out[0] * ku, out[1] * kv):
                gx_pad.zero_()
            torch.div(gy.expand(ku, kv, *gy.shape), ku * kv,
                      out=_tap_view(gx_pad, (ku, kv), stride, out))
        else:
            g = gy / (ku * kv)
            # Overlapping: each tap (u, v) adds dY/(U*V) to its pixels through a strided view,
            # U*V adds (faster here than one index_add over the window pixels).
            gx_pad.zero_()
            (mo, no), (sh, sw) = out, stride
            for u in range(ku):
                for v in range(kv):
                    gx_pad[:, :, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw] += g
        return _unpad(gx_pad, (ph, pw)), None, None, None, None


def avg_algorithms(kernel, stride, padding) -> tuple:
    """Average pooling's applicable backward paths, the rules' choice first."""
    return AVG_ALGORITHMS if _tiled(kernel, stride, padding) else ("views",)


def pool2d(x, kernel, stride, padding, mode, algo=None):
    """x [B,C,M,N] -> [B,C,M',N'], M' = (M + 2P - U) // S + 1; arguments already validated.

    `algo` forces one of avg_algorithms() for average pooling; None lets the autotuner choose."""
    if mode == "max":
        return _MaxPool.apply(x, kernel, stride, padding)
    algorithms = avg_algorithms(kernel, stride, padding)
    if algo is None:
        algo = autotune.pool_algorithm(x, kernel, stride, padding, mode, algorithms, _AvgPool.apply)
    elif algo not in algorithms:
        raise ValueError(f"pool2d: expected algo in {algorithms} for this shape, got {algo!r}")
    return _AvgPool.apply(x, kernel, stride, padding, algo)
