"""Fast max and average pooling from tensor building blocks, with a hand-written backward.

    max: y[b,c,i,j] = max_{u,v} x[b,c,S*i+u,S*j+v]        (x padded with -inf)
    avg: y[b,c,i,j] = 1/(U*V) sum_{u,v} x[b,c,S*i+u,S*j+v]  (x padded with 0; the window size
         divides, padding included)

Backward (derived from the two formulas):
    max: the gradient of each output goes to the one input that won its window (the first one
         on ties, as torch does);  avg: each input of a window gets dY / (U*V).

Never calls torch's pooling kernels: pad, as_strided window views, elementwise max/add, sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._checks import out_size


def _taps(xp, kernel, stride, out):
    """The U*V strided views x[:, :, u::S, v::S] cut to the output size, in (u, v) order."""
    (ku, kv), (sh, sw), (mo, no) = kernel, stride, out
    return [xp[:, :, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw]
            for u in range(ku) for v in range(kv)]


def _pad(x, padding, value):
    ph, pw = padding
    return x if ph == pw == 0 else F.pad(x, (pw, pw, ph, ph), value=value)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        xp = _pad(x, padding, float("-inf"))
        out = (out_size(x.shape[2], kernel[0], padding[0], stride[0]),
               out_size(x.shape[3], kernel[1], padding[1], stride[1]))
        # Running elementwise maximum over the U*V taps: each pass reads one strided view, so no
        # [.., U*V] window copy is ever made (for 2x2 that copy would be as large as x).
        taps = _taps(xp, kernel, stride, out)
        y = taps[0].clone(memory_format=torch.contiguous_format)
        for t in taps[1:]:
            torch.maximum(y, t, out=y)
        ctx.save_for_backward(x, y)
        ctx.geo = kernel, stride, padding, out
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, y = ctx.saved_tensors
        kernel, stride, padding, out = ctx.geo
        xp = _pad(x, padding, float("-inf"))
        gxp = torch.zeros_like(xp, memory_format=torch.contiguous_format)
        free = torch.ones_like(y, dtype=torch.bool)    # windows whose winner is not found yet
        for t, gt in zip(_taps(xp, kernel, stride, out), _taps(gxp, kernel, stride, out)):
            won = (t == y) & free      # first tap (in u, v order) equal to the max wins ties
            gt += torch.where(won, gy, 0.0)
            free &= ~won
        return _crop(gxp, padding), None, None, None


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        xp = _pad(x, padding, 0.0)
        out = (out_size(x.shape[2], kernel[0], padding[0], stride[0]),
               out_size(x.shape[3], kernel[1], padding[1], stride[1]))
        taps = _taps(xp, kernel, stride, out)
        y = taps[0].clone(memory_format=torch.contiguous_format)
        for t in taps[1:]:
            y += t
        y /= kernel[0] * kernel[1]
        ctx.geo = kernel, stride, padding, out
        ctx.x_shape = x.shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        kernel, stride, padding, out = ctx.geo
        b, c, m, n = ctx.x_shape
        gxp = gy.new_zeros((b, c, m + 2 * padding[0], n + 2 * padding[1]))
        g = gy / (kernel[0] * kernel[1])
        for gt in _taps(gxp, kernel, stride, out):
            gt += g
        return _crop(gxp, padding), None, None, None


def _crop(t, padding):
    ph, pw = padding
    return t if ph == pw == 0 else t[:, :, ph:t.shape[2] - ph, pw:t.shape[3] - pw]


def pool2d(x, kernel, stride, padding, mode):
    """x [B,C,M,N] -> [B,C,M',N'], M' = (M + 2P - U) // S + 1; arguments already validated."""
    fn = _MaxPool if mode == "max" else _AvgPool
    return fn.apply(x, kernel, stride, padding)
