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

from ._conv_common import channels_last, chunks, cropped, place, uncropped, unplace

# Padded-grid rows per chunk (whole images): one block up to the batch of 64 at 32x32, because
# every product is a thread-pool fork/join, costly on shared cores (benchmarks/README.md).
BLOCK_ROWS = 1 << 17


def _chunk(batch, rows_per_image):
    return max(1, min(batch, BLOCK_ROWS // rows_per_image))


class _Grid:
    """A reused zero-bordered buffer holding a chunk of images padded and flattened to rows."""

    def __init__(self, like, chunk, channels, padded, halo, zero=True):
        self.hp, self.wp = padded
        self.rows = self.hp * self.wp
        self.flat = (like.new_zeros if zero else like.new_empty)((chunk * self.rows + halo,
                                                                   channels))

    def images(self, n):
        """[n, C, Hp, Wp] (channels-last) view of the first n images of the buffer."""
        c = self.flat.shape[1]
        return self.flat[:n * self.rows].view(n, self.hp, self.wp, c).permute(0, 3, 1, 2)


def _format(x):
    return torch.channels_last if channels_last(x) else torch.contiguous_format


def forward(x, weight, bias, geo):
    """y [B,P,M',N'] = sum_(u,v) X[r + u*Np + v] @ W_uv^T on each chunk's grid; nothing kept."""
    w_crop = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = w_crop.shape[0], w_crop.shape[1], geo.kernel, geo.out
    b = x.shape[0]
    mp, np_ = geo.padded(*x.shape[2:])
    chunk = _chunk(b, mp * np_)
    x_grid = _Grid(x, chunk, d, (mp, np_), (ku - 1) * np_ + kv - 1)
    y_grid = _Grid(x, chunk, p, (mp, np_), 0)
    taps = [(u * np_ + v, w_crop[:, :, u, v].t().contiguous())
            for u in range(ku) for v in range(kv)]
    y = torch.empty((b, p, mo, no), dtype=x.dtype, device=x.device, memory_format=_format(x))
    for b0, b1 in chunks(b, chunk):
        place(x_grid.images(b1 - b0), x[b0:b1], geo.pads)
        r = (b1 - b0) * x_grid.rows
        acc = y_grid.flat[:r]
        (o, w_first), rest = taps[0], taps[1:]
        if bias is None:
            torch.mm(x_grid.flat[o:o + r], w_first, out=acc)
        else:
            torch.addmm(bias, x_grid.flat[o:o + r], w_first, out=acc)
        for o, w_uv_t in rest:
            acc.addmm_(x_grid.flat[o:o + r], w_uv_t)          # Y += X shifted by (u,v) @ W_uv^T
        y[b0:b1] = y_grid.images(b1 - b0)[:, :, :mo, :no]
    return y, None


def _dy_grids(gy, geo, chunk, padded):
    """dY of each chunk on the padded grid, zero at the thrown-away rows (so they contribute
    nothing): yields (b0, b1, rows [n*Mp*Np, P])."""
    b, p, (mo, no) = gy.shape[0], gy.shape[1], geo.out
    grid = _Grid(gy, chunk, p, padded, 0, zero=False)
    grid.images(chunk)[:, :, mo:].zero_()          # written once: only [:mo, :no] changes
    grid.images(chunk)[:, :, :mo, no:].zero_()
    for b0, b1 in chunks(b, chunk):
        grid.images(b1 - b0)[:, :, :mo, :no] = gy[b0:b1]
        yield b0, b1, grid.flat[:(b1 - b0) * grid.rows]


def weight_grad(x, weight, gy, geo, kept_columns=None):
    """dW_uv = sum_r X[r + u*Np + v]^T @ dY[r], [P,D,U,V]."""
    p, d, (ku, kv) = weight.shape[0], x.shape[1], geo.kernel
    mp, np_ = geo.padded(*x.shape[2:])
    chunk = _chunk(x.shape[0], mp * np_)
    x_grid = _Grid(x, chunk, d, (mp, np_), (ku - 1) * np_ + kv - 1)
    gw_taps = x.new_zeros((ku * kv, d, p))
    offsets = [u * np_ + v for u in range(ku) for v in range(kv)]
    for b0, b1, g in _dy_grids(gy, geo, chunk, (mp, np_)):
        place(x_grid.images(b1 - b0), x[b0:b1], geo.pads)
        for t, o in enumerate(offsets):
            gw_taps[t].addmm_(x_grid.flat[o:o + g.shape[0]].t(), g)   # dW_uv += X_shifted^T dY
    return uncropped(gw_taps.view(ku, kv, d, p).permute(3, 2, 0, 1), weight, geo)


def input_grad(x, weight, gy, geo):
    """dX[r + u*Np + v] += dY[r] @ W_uv, [B,D,M,N]."""
    w_crop = cropped(weight, geo)
    d, (ku, kv) = x.shape[1], geo.kernel
    mp, np_ = geo.padded(*x.shape[2:])
    chunk = _chunk(x.shape[0], mp * np_)
    gx_grid = _Grid(x, chunk, d, (mp, np_), (ku - 1) * np_ + kv - 1)
    taps = [(u * np_ + v, w_crop[:, :, u, v].contiguous()) for u in range(ku) for v in range(kv)]
    gx = torch.empty_like(x, memory_format=_format(x))
    for b0, b1, g in _dy_grids(gy, geo, chunk, (mp, np_)):
        gx_grid.flat.zero_()
        for o, w_uv in taps:
            gx_grid.flat[o:o + g.shape[0]].addmm_(g, w_uv)            # dX_shifted += dY @ W_uv
        unplace(gx[b0:b1], gx_grid.images(b1 - b0), geo.pads)
    return gx
