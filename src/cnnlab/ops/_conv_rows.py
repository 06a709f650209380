"""Convolution as one matrix product over channels-last window rows ("im2col", "pointwise").

For a chunk of n images, row (b,i,j) of cols is the window x[b, S*i:S*i+U, S*j:S*j+V, :] in
channels-last order (u,v,d): U*V contiguous runs of D channels, cheap to copy when D is large.
    Y[n*M'*N', P] = cols @ W^T       (the rows of a channels-last output)
    dW += dY^T @ cols
    dx: stride 1 and P <= 2D, or a 1x1 kernel with stride 1: dY padded, correlated with the
        flipped kernel (this module's own forward; for a 1x1 kernel without padding the rows of
        dY are the columns, no copy); otherwise dcols = dY @ W, scattered back by col2im (for a
        1x1 kernel that is a single strided assignment).
A channels-last x is read in place and gets a channels-last y (no layout change at all); an NCHW
x is transposed chunk by chunk into a reused buffer while the chunk is in cache.
"""

from __future__ import annotations

import torch

from ._conv_common import (NO_PADS, channels_last, chunk_size, chunks, col2im, column_reader,
                           columns_chunk, cropped, dx_is_transposed_conv, keep_columns, matrix,
                           padded_reader, transposed_input_grad, uncropped, unplace)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


def _rows(xp, geo, buf):
    """Window rows of channels-last xp [n,D,Mp,Np] -> [n, M'*N', U*V*D] (copied into buf)."""
    n, d = xp.shape[:2]
    (ku, kv), (sh, sw), (mo, no) = geo.kernel, geo.stride, geo.out
    xh = _nhwc(xp)
    if (ku, kv, sh, sw) == (1, 1, 1, 1) and xh.is_contiguous():
        return xh.reshape(n, mo * no, d)                   # 1x1, stride 1: pixels are the rows
    sn, sm, sx, sd = xh.stride()
    windows = xh.as_strided((n, mo, no, ku, kv, d), (sn, sm * sh, sx * sw, sm, sx, sd))
    rows = buf[:n * mo * no * ku * kv * d].view(n, mo * no, ku * kv * d)
    rows.view(n, mo, no, ku, kv, d).copy_(windows)
    return rows


class _Out:
    """An output [B,C,H,W] filled chunk by chunk from channels-last rows, in the layout torch's
    conv would give: channels-last for a channels-last input (the products write it in place),
    else NCHW, transposed per chunk from a small reused buffer while the chunk is in cache."""

    def __init__(self, like, shape, chunk):
        b, c, h, w = shape
        self.last = channels_last(like)
        self.t = like.new_empty((b, h, w, c)).permute(0, 3, 1, 2) if self.last else \
            like.new_empty(shape)
        self.buf = None if self.last else like.new_empty(chunk * h * w * c)

    def rows(self, b0, b1):
        """[(b1-b0)*H*W, C]: where the products write images b0..b1-1."""
        c, h, w = self.t.shape[1:]
        if self.last:
            return _nhwc(self.t[b0:b1]).reshape((b1 - b0) * h * w, c)
        return self.buf[:(b1 - b0) * h * w * c].view((b1 - b0) * h * w, c)

    def images(self, b0, b1):
        """The same memory as rows(b0, b1), as an [n, C, H, W] view."""
        c, h, w = self.t.shape[1:]
        return _nhwc_to_nchw(self.rows(b0, b1), b1 - b0, h, w, c)

    def commit(self, b0, b1):
        if not self.last:
            self.t[b0:b1] = self.images(b0, b1)


def _nhwc_to_nchw(rows, n, h, w, c):
    """The NCHW view of channels-last rows [n*h*w, c]."""
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _dy_rows(gy, chunk):
    """Reader of dY of images b0..b1 as channels-last rows [n*M'*N', P] (a view when gy is)."""
    read = padded_reader(gy, chunk, NO_PADS, nhwc=True)
    return lambda b0, b1: _nhwc(read(b0, b1)).reshape(-1, gy.shape[1])


def forward(x, weight, bias, geo):
    """y [B,P,M',N'] and the rows kept for dW ([B, M'*N', K], or None: see keep_columns)."""
    w_crop = cropped(weight, geo)
    p, k = w_crop.shape[0], w_crop[0].numel()
    b = x.shape[0]
    w_mat = matrix(w_crop.permute(0, 2, 3, 1), p)               # [P, K], K in (u,v,d) order
    chunk = columns_chunk(x, geo)
    columns = column_reader(x, geo, chunk, _rows, nhwc=True)
    y = _Out(x, (b, p, *geo.out), chunk)
    for b0, b1 in chunks(b, chunk):
        rows = columns(b0, b1)
        if bias is None:
            torch.mm(rows.view(-1, k), w_mat.t(), out=y.rows(b0, b1))
        else:
            torch.addmm(bias, rows.view(-1, k), w_mat.t(), out=y.rows(b0, b1))
        y.commit(b0, b1)
    return y.t, keep_columns(rows, b)


def weight_grad(x, weight, gy, geo, kept_columns=None):
    """dW [P,D,U,V] = dY^T @ cols, cols from the forward (kept) or copied again."""
    p, d, (ku, kv) = weight.shape[0], x.shape[1], geo.kernel
    k = ku * kv * d
    chunk = columns_chunk(x, geo)
    columns = column_reader(x, geo, chunk, _rows, kept_columns, nhwc=True)
    dy_rows = _dy_rows(gy, chunk)
    gw = x.new_zeros((p, k))
    for b0, b1 in chunks(x.shape[0], chunk):
        gw.addmm_(dy_rows(b0, b1).t(), columns(b0, b1).reshape(-1, k))   # dW += dY^T @ cols
    return uncropped(gw.view(p, ku, kv, d).permute(0, 3, 1, 2), weight, geo)


def input_grad(x, weight, gy, geo):
    """dx [B,D,M,N]: a stride-1 convolution of dY where it applies, else dcols + col2im."""
    w_crop = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = w_crop.shape[0], w_crop.shape[1], geo.kernel, geo.out
    if dx_is_transposed_conv(p, d, geo):
        return transposed_input_grad(forward, gy, w_crop, geo, x.shape[2:])
    b, k = x.shape[0], ku * kv * d
    w_mat = matrix(w_crop.permute(0, 2, 3, 1), p)
    chunk = chunk_size(b, mo * no * k * x.element_size(), x.device)
    dy_rows = _dy_rows(gy, chunk)
    gcols_buf = x.new_empty(chunk * mo * no * k)
    gx_pad = x.new_empty((chunk, *geo.padded(*x.shape[2:]), d)).permute(0, 3, 1, 2)
    gx = _Out(x, x.shape, chunk)
    for b0, b1 in chunks(b, chunk):
        n = b1 - b0
        g = dy_rows(b0, b1)
        gcols = torch.mm(g, w_mat, out=gcols_buf[:g.shape[0] * k].view(g.shape[0], k))
        col2im(gcols.view(n, mo, no, ku, kv, d).permute(0, 5, 3, 4, 1, 2), gx_pad[:n],
               geo.stride)
        unplace(gx.images(b0, b1), gx_pad[:n], geo.pads)
        gx.commit(b0, b1)
    return gx.t
