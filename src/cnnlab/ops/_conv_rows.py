"""Convolution as one matrix product over channels-last window rows ("im2col", "pointwise").

For a chunk of n images, row (b,i,j) of cols is the window x[b, S*i:S*i+U, S*j:S*j+V, :] in
channels-last order (u,v,d): U*V contiguous runs of D channels, cheap to copy when D is large.
    Y[n*M'*N', P] = cols @ W^T       (the rows of a channels-last output)
    dW += dY^T @ cols
    dx: stride 1 and P <= 2D: dY padded, correlated with the flipped kernel (no scatter);
        otherwise dcols = dY @ W, scattered back tap by tap (col2im); for a 1x1 kernel that is a
        single strided assignment, and with stride 1 and no padding no scatter at all.
A channels-last x is read in place and gets a channels-last y (no layout change at all); an NCHW
x is transposed chunk by chunk into a reused buffer while the chunk is in cache.
"""

from __future__ import annotations

import torch

from ._conv_common import (KEEP_COLUMNS_BYTES, channels_last, chunk_size, cropped, matrix,
                           padded_reader, uncropped, unplace)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)



def _rows(xp, kernel, stride, out, buf):
    """Window rows of channels-last xp [n,D,Mp,Np] -> [n*M'*N', U*V*D] (copied into buf)."""
    n, d = xp.shape[:2]
    (ku, kv), (sh, sw), (mo, no) = kernel, stride, out
    xh = _nhwc(xp)
    if (ku, kv, sh, sw) == (1, 1, 1, 1) and xh.is_contiguous():
        return xh.reshape(n * mo * no, d)                  # 1x1, stride 1: pixels are the rows
    sn, sm, sx, sd = xh.stride()
    windows = xh.as_strided((n, mo, no, ku, kv, d), (sn, sm * sh, sx * sw, sm, sx, sd))
    rows = buf[:n * mo * no * ku * kv * d].view(n * mo * no, ku * kv * d)
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
        c, h, w = self.t.shape[1:]
        if self.last:
            return _nhwc(self.t[b0:b1]).reshape((b1 - b0) * h * w, c)
        return self.buf[:(b1 - b0) * h * w * c].view((b1 - b0) * h * w, c)

    def commit(self, b0, b1):
        if not self.last:
            c, h, w = self.t.shape[1:]
            self.t[b0:b1] = self.rows(b0, b1).view(b1 - b0, h, w, c).permute(0, 3, 1, 2)


def forward(x, weight, bias, geo):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    b, k = x.shape[0], ku * kv * d
    wm = matrix(wk.permute(0, 2, 3, 1), p)                   # [P, K], K in (u,v,d) order
    chunk = chunk_size(b, mo * no * k * x.element_size(), x.device)
    read = padded_reader(x, chunk, geo.pads, nhwc=True)
    cols = x.new_empty(chunk * mo * no * k)
    y = _Out(x, (b, p, mo, no), chunk)
    for b0 in range(0, b, chunk):
        b1 = min(b, b0 + chunk)
        c = _rows(read(b0, b1), geo.kernel, geo.stride, geo.out, cols)
        if bias is None:
            torch.mm(c, wm.t(), out=y.rows(b0, b1))
        else:
            torch.addmm(bias, c, wm.t(), out=y.rows(b0, b1))
        y.commit(b0, b1)
    keep = chunk == b and c.numel() * c.element_size() <= KEEP_COLUMNS_BYTES
    return y.t, (c if keep else None)


def backward(x, weight, gy, geo, need_x, need_w, kept=None):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    (b, _, m, n_), k = x.shape, ku * kv * d
    wm = matrix(wk.permute(0, 2, 3, 1), p)
    one_by_one = geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads)
    transposed = need_x and geo.stride == (1, 1) and p <= 2 * d and not one_by_one
    per_image = mo * no * k if not transposed else max(mo * no * k, m * n_ * ku * kv * p)
    chunk = chunk_size(b, per_image * x.element_size(), x.device)
    read_g = padded_reader(gy, chunk, (0, 0, 0, 0), nhwc=True)  # dY as channels-last rows
    cols = x.new_empty(chunk * per_image)
    gw = x.new_zeros((p, k)) if need_w else None
    gx = _Out(x, x.shape, chunk) if need_x else None
    if need_w:
        read_x = padded_reader(x, chunk, geo.pads, nhwc=True)
    if transposed:
        # dx[m] = sum_u dY[m + top - u] w[u]: dY padded so the flipped kernel reads it validly.
        read_gp = padded_reader(gy, chunk, geo.transposed_pads(m, n_), nhwc=True)
        wf = matrix(wk.flip(2, 3).permute(1, 2, 3, 0), d)   # [D, (u,v,p)]
    elif need_x and not one_by_one:
        mp, np_ = geo.padded(m, n_)
        gxp = x.new_empty((chunk, mp, np_, d)).permute(0, 3, 1, 2)
    for b0 in range(0, b, chunk):
        b1 = min(b, b0 + chunk)
        g = _nhwc(read_g(b0, b1)).reshape(-1, p)                 # dY rows [n*M'*N', P]
        if need_w:
            c = kept if kept is not None else \
                _rows(read_x(b0, b1), geo.kernel, geo.stride, geo.out, cols)
            gw.addmm_(g.t(), c)                                  # dW += dY^T @ cols
        if not need_x:
            continue
        rows = gx.rows(b0, b1)
        if transposed:
            c = _rows(read_gp(b0, b1), (ku, kv), (1, 1), (m, n_), cols)
            torch.mm(c, wf.t(), out=rows)
        elif one_by_one:
            torch.mm(g, wm, out=rows)                            # 1x1: dx = dY @ W
        else:
            gc = torch.mm(g, wm, out=cols[:g.shape[0] * k].view(g.shape[0], k))   # dcols
            part = gxp[:b1 - b0]
            _col2im(gc.view(b1 - b0, mo, no, ku, kv, d), _nhwc(part), geo.stride)
            unplace(_nhwc_to_nchw(rows, b1 - b0, m, n_, d), part, geo.pads)
        gx.commit(b0, b1)
    if need_w:
        gw = uncropped(gw.view(p, ku, kv, d).permute(0, 3, 1, 2), weight, geo)
    return (gx.t if need_x else None), gw


def _nhwc_to_nchw(rows, n, m, w, d):
    """The NCHW view of channels-last rows [n*m*w, d]."""
    return rows.view(n, m, w, d).permute(0, 3, 1, 2)


def _col2im(gc, gxh, stride):
    """gxh[b, S*i+u, S*j+v, :] = sum over taps of gc[b, i, j, u, v, :] (channels-last, U*V adds;
    a 1x1 kernel has one tap, so that is a single strided assignment)."""
    (sh, sw), (_, mo, no, ku, kv, _) = stride, gc.shape
    if (ku, kv) == (1, 1):
        if (sh, sw) != (1, 1) or gxh.shape[1:3] != gc.shape[1:3]:
            gxh.zero_()
        gxh[:, :sh * (mo - 1) + 1:sh, :sw * (no - 1) + 1:sw] = gc[:, :, :, 0, 0]
        return
    gxh.zero_()
    for u in range(ku):
        for v in range(kv):
            gxh[:, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw] += gc[:, :, :, u, v]
