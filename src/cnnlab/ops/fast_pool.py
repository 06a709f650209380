"""Fast max and average pooling from tensor building blocks, with a hand-written backward.

    max: y[b,c,i,j] = max_{u,v} x[b,c,S*i+u,S*j+v]        (x padded with -inf)
    avg: y[b,c,i,j] = 1/(U*V) sum_{u,v} x[b,c,S*i+u,S*j+v]  (x padded with 0; the window size
         divides, padding included)

Backward (derived from the two formulas):
    max: dx at the one input that won each window (the first one on ties, as torch) gets dY;
    avg: every input of a window gets dY / (U*V).

Never calls torch's pooling kernels: pad, as_strided views, one copy, reductions, comparisons.
The windows are copied tap-major, taps[t] = x[.., S*i+u, S*j+v] for t = (u,v), so that the copy
runs along a row of outputs and the reduction over the U*V taps is an elementwise max/sum of
whole planes (vectorised). Reducing over a trailing window axis instead, or along a strided
view, is 3-25x slower (measured: 64x6x28x28, 2x2/2: copy+amax 0.8 ms vs 5.4 ms on the view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._checks import out_size


def _pad(x, padding, value):
    ph, pw = padding
    return x if ph == pw == 0 else F.pad(x, (pw, pw, ph, ph), value=value)


def _tap_view(xp, kernel, stride, out):
    """View [U, V, B, C, M', N'] of the windows of xp, tap-major (no copy)."""
    sb, sc, sm, sn = xp.stride()
    return xp.as_strided((*kernel, *xp.shape[:2], *out),
                         (sm, sn, sb, sc, sm * stride[0], sn * stride[1]))


def _taps(x, kernel, stride, padding, value):
    """The U*V taps of every window as one tensor [U*V, B, C, M', N'] (one copy), and M', N'."""
    out = (out_size(x.shape[2], kernel[0], padding[0], stride[0]),
           out_size(x.shape[3], kernel[1], padding[1], stride[1]))
    view = _tap_view(_pad(x, padding, value), kernel, stride, out)
    return view.reshape(kernel[0] * kernel[1], *x.shape[:2], *out), out


def _scatter_taps(gt, x_shape, kernel, stride, padding, out):
    """dx from per-tap gradients gt [U*V, B, C, M', N']: the adjoint of `_taps`."""
    (ph, pw), (ku, kv) = padding, kernel
    b, c, m, n = x_shape
    gxp = gt.new_empty((b, c, m + 2 * ph, n + 2 * pw))
    view = _tap_view(gxp, kernel, stride, out)
    covered = (stride == kernel and ph == pw == 0 and (m, n) == (out[0] * ku, out[1] * kv))
    if stride[0] >= ku and stride[1] >= kv:
        # Windows do not overlap: every input is in at most one window, one copy writes them all.
        if not covered:
            gxp.zero_()
        view.copy_(gt.view(ku, kv, *gt.shape[1:]))
    else:
        gxp.zero_()
        for u in range(ku):            # overlapping windows: one strided add per tap
            for v in range(kv):
                view[u, v] += gt[u * kv + v]
    return gxp[:, :, ph:ph + m, pw:pw + n]


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        taps, out = _taps(x, kernel, stride, padding, float("-inf"))
        # max over the taps returns the first maximum's tap on ties (windows of ReLU zeros),
        # which is where torch's max-pool sends the gradient too.
        y, tap = taps.max(dim=0)
        ctx.save_for_backward(tap)
        ctx.geo = x.shape, kernel, stride, padding, out
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        (tap,) = ctx.saved_tensors
        x_shape, kernel, stride, padding, out = ctx.geo
        # dY to the winning tap of each window (one scatter into per-tap planes), then back to x.
        # Measured 4-7x faster than recomputing the winners by comparison (ties need a cumsum).
        gt = gy.new_zeros((kernel[0] * kernel[1], *gy.shape))
        gt.scatter_(0, tap[None], gy[None])
        return _scatter_taps(gt, x_shape, kernel, stride, padding, out), None, None, None


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        taps, out = _taps(x, kernel, stride, padding, 0.0)
        ctx.geo = x.shape, kernel, stride, padding, out
        return taps.sum(dim=0) / (kernel[0] * kernel[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x_shape, kernel, stride, padding, out = ctx.geo
        g = (gy / (kernel[0] * kernel[1])).expand(kernel[0] * kernel[1], *gy.shape)
        return _scatter_taps(g, x_shape, kernel, stride, padding, out), None, None, None


def pool2d(x, kernel, stride, padding, mode):
    """x [B,C,M,N] -> [B,C,M',N'], M' = (M + 2P - U) // S + 1; arguments already validated."""
    fn = _MaxPool if mode == "max" else _AvgPool
    return fn.apply(x, kernel, stride, padding)
