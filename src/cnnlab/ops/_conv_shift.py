"""Stride-1 convolution as U*V shifted matrix products on the flattened padded image ("shift").

Lay a chunk of zero-padded images out channels-last and flatten it: row r = (b, m, n) of
X [n*Mp*Np, D]. With stride 1, tap (u, v) of output pixel r reads row r + u*Np + v, so for every
tap the rows it reads form one contiguous block of X, a plain matrix with no copy at all:
    Y[r] = sum_(u,v) X[r + u*Np + v] @ W_uv^T           (U*V products, K = D each)
computed for every row r of the padded grid (rows past the right/bottom edge are computed and
thrown away: (Mp*Np)/(M'*N') - 1 extra work, 13% at 32x32). The backward is the same shifts:
    dW_uv = sum_r X[r + u*Np + v]^T @ dY[r]              (dY zero outside the valid outputs)
    dX[r + u*Np + v] += dY[r] @ W_uv
No im2col at all: where the columns copy costs as much as the product (64 channels on 32x32
maps: 9x the input copied per pass) this is faster than "im2col"/"unfold" (see fast_conv).
Rows a tap reads past a chunk's last image are zeros and only feed thrown-away outputs.
"""

from __future__ import annotations

import torch

from ._conv_common import channels_last, cropped, place, uncropped, unplace

# Padded-grid rows per chunk (whole images). Small blocks keep the accumulated block of Y or dX
# in cache (8192 rows: 1.4x native at 64 channels on 32x32, one thread, idle machine) but cost
# 27 products per block; when other processes share the two cores every product is a fork/join
# that may wait for a descheduled thread, and 8192-row blocks measured 7.3x native vs 2.3x for
# one block of the whole batch. One block up to 131072 rows (the batch of 64 at 32x32) is
# within 1.2x of the best in both conditions, with peak memory ~1.1x native's.
BLOCK_ROWS = 1 << 17


def _chunk(batch, rows_per_image):
    return max(1, min(batch, BLOCK_ROWS // rows_per_image))


class _Grid:
    """A reused zero-bordered buffer holding a chunk of images padded and flattened to rows."""

    def __init__(self, like, chunk, channels, padded, halo):
        self.hp, self.wp = padded
        self.rows = self.hp * self.wp
        self.flat = like.new_zeros((chunk * self.rows + halo, channels))

    def images(self, n):
        """[n, C, Hp, Wp] (channels-last) view of the first n images of the buffer."""
        c = self.flat.shape[1]
        return self.flat[:n * self.rows].view(n, self.hp, self.wp, c).permute(0, 3, 1, 2)


def _format(x):
    return torch.channels_last if channels_last(x) else torch.contiguous_format


def forward(x, weight, bias, geo):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    b = x.shape[0]
    mp, np_ = geo.padded(*x.shape[2:])
    halo = (ku - 1) * np_ + kv - 1
    chunk = _chunk(b, mp * np_)
    xg, yg = _Grid(x, chunk, d, (mp, np_), halo), _Grid(x, chunk, p, (mp, np_), 0)
    taps = [(u * np_ + v, wk[:, :, u, v].t().contiguous()) for u in range(ku) for v in range(kv)]
    y = torch.empty((b, p, mo, no), dtype=x.dtype, device=x.device, memory_format=_format(x))
    for b0 in range(0, b, chunk):
        n = min(b, b0 + chunk) - b0
        place(xg.images(n), x[b0:b0 + n], geo.pads)
        r = n * xg.rows
        acc = yg.flat[:r]
        (o, w0), rest = taps[0], taps[1:]
        if bias is None:
            torch.mm(xg.flat[o:o + r], w0, out=acc)
        else:
            torch.addmm(bias, xg.flat[o:o + r], w0, out=acc)
        for o, wt in rest:
            acc.addmm_(xg.flat[o:o + r], wt)                   # Y += X shifted by (u,v) @ W_uv^T
        y[b0:b0 + n] = yg.images(n)[:, :, :mo, :no]
    return y, None


def backward(x, weight, gy, geo, need_x, need_w, kept=None):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    b, m, n_ = x.shape[0], *x.shape[2:]
    mp, np_ = geo.padded(m, n_)
    halo = (ku - 1) * np_ + kv - 1
    chunk = _chunk(b, mp * np_)
    offsets = [u * np_ + v for u in range(ku) for v in range(kv)]
    # dY on the padded grid, zero at the thrown-away rows (so they contribute nothing).
    gg = _Grid(x, chunk, p, (mp, np_), 0)
    gw = gx = None
    if need_w:
        xg = _Grid(x, chunk, d, (mp, np_), halo)
        gwt = x.new_zeros((ku * kv, d, p))
    if need_x:
        dg = _Grid(x, chunk, d, (mp, np_), halo)
        wts = [wk[:, :, u, v].contiguous() for u in range(ku) for v in range(kv)]
        gx = torch.empty_like(x, memory_format=_format(x))
    for b0 in range(0, b, chunk):
        n = min(b, b0 + chunk) - b0
        r = n * gg.rows
        gg.images(n)[:, :, :mo, :no] = gy[b0:b0 + n]
        g = gg.flat[:r]
        if need_w:
            place(xg.images(n), x[b0:b0 + n], geo.pads)
            for t, o in enumerate(offsets):
                gwt[t].addmm_(xg.flat[o:o + r].t(), g)          # dW_uv += X_shifted^T @ dY
        if need_x:
            dg.flat.zero_()
            for o, wt in zip(offsets, wts):
                dg.flat[o:o + r].addmm_(g, wt)                  # dX_shifted += dY @ W_uv
            unplace(gx[b0:b0 + n], dg.images(n), geo.pads)
    if need_w:
        gw = uncropped(gwt.view(ku, kv, d, p).permute(3, 2, 0, 1), weight, geo)
    return gx, gw
