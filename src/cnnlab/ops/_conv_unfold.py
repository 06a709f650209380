"""Convolution as a batch of per-image matrix products over unfolded columns, NCHW in and out.

For a chunk of n images the columns are cols[b, (d,u,v), (i,j)] = x[b, d, S*i+u, S*j+v] (the
layout of F.unfold): each row of cols copies runs of N' neighbouring pixels, which is cheap when
the image is wide even with few channels (LeNet's conv1 has D = 1, where channels-last rows would
be copied one float at a time). Then, per image b (one batched product for the chunk):
    Y_b[P, M'*N'] = W[P, K] @ cols_b[K, M'*N']      already NCHW: no transpose of y
    dW = sum_b dY_b @ cols_b^T                       dY is read in place, NCHW
    dx: stride 1 and P <= 2D (or 1x1): dY padded, correlated with the flipped kernel (its own
        forward, no scatter); stride 1, P > 2D and D >= 4: U*V shifted products (see _conv_dx);
        otherwise dcols_b = W^T @ dY_b, scattered back by col2im.
Per-image products rather than one big [K, n*M'*N'] product, which would need y and dY
transposed (benchmarks/README.md).
"""

from __future__ import annotations

import torch

from . import _conv_dx
from ._conv_common import (channels_last, chunk_size, chunks, col2im, column_reader,
                           columns_chunk, cropped, dx_is_transposed_conv, keep_columns, matrix,
                           transposed_input_grad, uncropped, unplace)


def _columns(xp, geo, buf):
    """Copy the windows of padded xp [n,D,Mp,Np] into buf as cols [n, D*U*V, M'*N']."""
    n, d = xp.shape[:2]
    (ku, kv), (sh, sw), (mo, no) = geo.kernel, geo.stride, geo.out
    sn, sd, sm, sx = xp.stride()
    windows = xp.as_strided((n, d, ku, kv, mo, no), (sn, sd, sm, sx, sm * sh, sx * sw))
    cols = buf[:n * d * ku * kv * mo * no].view(n, d * ku * kv, mo * no)
    cols.view(n, d, ku, kv, mo, no).copy_(windows)
    return cols


def _nchw(shape, like):
    """An output tensor of this shape in like's memory format (channels-last stays so)."""
    fmt = torch.channels_last if channels_last(like) else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def forward(x, weight, bias, geo):
    """y [B,P,M',N'] and the columns kept for dW ([B, K, M'*N'], or None: see keep_columns)."""
    w_crop = cropped(weight, geo)
    p, (mo, no) = w_crop.shape[0], geo.out
    b, pixels = x.shape[0], mo * no
    w_mat = matrix(w_crop, p)                                     # [P, K], K in (d,u,v) order
    chunk = columns_chunk(x, geo)
    columns = column_reader(x, geo, chunk, _columns)
    y = _nchw((b, p, mo, no), x)
    direct = y.is_contiguous()
    y_buf = None if direct else x.new_empty(chunk * p * pixels)
    for b0, b1 in chunks(b, chunk):
        n = b1 - b0
        cols = columns(b0, b1)
        y_rows = (y[b0:b1] if direct else y_buf[:n * p * pixels]).view(n, p, pixels)
        if bias is None:
            torch.matmul(w_mat, cols, out=y_rows)
        else:
            torch.baddbmm(bias.view(1, p, 1), w_mat.expand(n, p, w_mat.shape[1]), cols, out=y_rows)
        if not direct:
            y[b0:b1] = y_rows.view(n, p, mo, no)
    return y, keep_columns(cols, b)


def weight_grad(x, weight, gy, geo, kept_columns=None):
    """dW [P,D,U,V] = sum_b dY_b @ cols_b^T, cols from the forward (kept) or copied again."""
    p, d, (ku, kv), (mo, no) = weight.shape[0], x.shape[1], geo.kernel, geo.out
    chunk = columns_chunk(x, geo)
    columns = column_reader(x, geo, chunk, _columns, kept_columns)
    gw = x.new_zeros((p, d * ku * kv))
    for b0, b1 in chunks(x.shape[0], chunk):
        g = gy[b0:b1].reshape(b1 - b0, p, mo * no)                 # dY_b [P, M'*N'] (a view)
        gw += torch.bmm(g, columns(b0, b1).transpose(1, 2)).sum(dim=0)
    return uncropped(gw.view(p, d, ku, kv), weight, geo)


def input_grad(x, weight, gy, geo):
    """dx [B,D,M,N] by the cheapest of the three routes in the module docstring."""
    w_crop = cropped(weight, geo)
    p, d = w_crop.shape[:2]
    if dx_is_transposed_conv(p, d, geo):
        return transposed_input_grad(forward, gy, w_crop, geo, x.shape[2:])
    if geo.stride == (1, 1) and d >= _conv_dx.MIN_CHANNELS:
        return _conv_dx.input_grad(x, w_crop, gy, geo)
    return _col2im_input_grad(x, w_crop, gy, geo)


def _col2im_input_grad(x, w_crop, gy, geo):
    """dx from dcols_b = W^T @ dY_b [K, M'*N'], scattered back onto the padded planes."""
    p, d, (ku, kv), (mo, no) = w_crop.shape[0], w_crop.shape[1], geo.kernel, geo.out
    b, k, pixels = x.shape[0], d * ku * kv, mo * no
    w_mat = matrix(w_crop, p)
    chunk = chunk_size(b, k * pixels * x.element_size(), x.device)
    gcols_buf = x.new_empty(chunk * k * pixels)
    gx_pad = x.new_empty((chunk, d, *geo.padded(*x.shape[2:])))
    gx = _nchw(x.shape, x)
    for b0, b1 in chunks(b, chunk):
        n = b1 - b0
        g = gy[b0:b1].reshape(n, p, pixels)
        gcols = torch.matmul(w_mat.t(), g, out=gcols_buf[:n * k * pixels].view(n, k, pixels))
        col2im(gcols.view(n, d, ku, kv, mo, no), gx_pad[:n], geo.stride)
        unplace(gx[b0:b1], gx_pad[:n], geo.pads)
    return gx
