"""Convolution as one matrix product over channel-major columns ("unfold" layout), NCHW in/out.

For a chunk of n images the columns are cols[(d,u,v), (b,i,j)] = x[b, d, S*i+u, S*j+v]: each row
of cols copies runs of N' neighbouring pixels, which is cheap when the image is wide even with few
channels (LeNet's conv1 has D = 1, where channels-last rows would be copied one float at a time).
    Y[P, n*M'*N'] = W[P, K] @ cols[K, n*M'*N']            then one transpose to [n, P, M', N']
    dW += dY[P, n*M'*N'] @ cols^T
    dx: stride 1 and P <= 2D: dY padded, correlated with the flipped kernel (same columns trick,
        no scatter); otherwise dcols = W^T @ dY, scattered back tap by tap (col2im).
"""

from __future__ import annotations

import torch

from ._conv_common import channels_last, chunk_size, cropped, matrix, place, uncropped, unplace


def _format(x):
    """The memory format torch's conv would give the output: x's own."""
    return torch.channels_last if channels_last(x) else torch.contiguous_format


def _reader(t, chunk, pads):
    """Reader of NCHW image chunks of t padded by `pads` (a view of t when there is no padding)."""
    if not any(pads):
        return lambda b0, b1: t[b0:b1]
    b, c, h, w = t.shape
    top, bottom, left, right = pads
    buf = t.new_zeros((chunk, c, h + top + bottom, w + left + right))

    def read(b0, b1):
        part = buf[:b1 - b0]
        place(part, t[b0:b1], pads)
        return part
    return read


def _columns(xp, kernel, stride, out, buf):
    """Copy the windows of padded xp [n,D,Mp,Np] into buf as cols [D*U*V, n*M'*N']."""
    n, d = xp.shape[:2]
    (ku, kv), (sh, sw), (mo, no) = kernel, stride, out
    sn, sd, sm, sx = xp.stride()
    windows = xp.as_strided((d, ku, kv, n, mo, no), (sd, sm, sx, sn, sm * sh, sx * sw))
    cols = buf[:d * ku * kv * n * mo * no].view(d * ku * kv, n * mo * no)
    cols.view(d, ku, kv, n, mo, no).copy_(windows)
    return cols


def forward(x, weight, bias, geo):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    b, k, L = x.shape[0], d * ku * kv, mo * no
    wm = matrix(wk, p)                                        # [P, K], K in (d,u,v) order
    chunk = chunk_size(b, L * k * x.element_size(), x.device)
    read = _reader(x, chunk, geo.pads)
    cols, ybuf = x.new_empty(chunk * L * k), x.new_empty(chunk * L * p)
    y = torch.empty((b, p, mo, no), dtype=x.dtype, device=x.device, memory_format=_format(x))
    for b0 in range(0, b, chunk):
        n = min(b, b0 + chunk) - b0
        c = _columns(read(b0, b0 + n), geo.kernel, geo.stride, geo.out, cols)
        yk = ybuf[:p * n * L].view(p, n * L)
        if bias is None:
            torch.mm(wm, c, out=yk)
        else:
            torch.addmm(bias[:, None], wm, c, out=yk)
        y[b0:b0 + n] = yk.view(p, n, mo, no).transpose(0, 1)
    return y


def backward(x, weight, gy, geo, need_x, need_w):
    wk = cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    (b, _, m, n_), k, L = x.shape, d * ku * kv, mo * no
    wm = matrix(wk, p)
    transposed = need_x and geo.stride == (1, 1) and p <= 2 * d
    per_image = L * k if not transposed else max(L * k, m * n_ * ku * kv * p)
    chunk = chunk_size(b, per_image * x.element_size(), x.device)
    gbuf, cols = x.new_empty(chunk * L * p), x.new_empty(chunk * per_image)
    gw = x.new_zeros((p, k)) if need_w else None
    gx = torch.empty_like(x, memory_format=_format(x)) if need_x else None
    if need_w:
        read_x = _reader(x, chunk, geo.pads)
    if transposed:
        # dx[m] = sum_u dY[m + top - u] w[u]: dY padded so the flipped kernel reads it validly.
        gpads = geo.transposed_pads(m, n_)
        read_g = _reader(gy, chunk, gpads)
        wf = matrix(wk.flip(2, 3).transpose(0, 1), d)   # [D, (p,u,v)]
        xbuf = x.new_empty(chunk * m * n_ * d)
    elif need_x:
        mp, np_ = geo.padded(m, n_)
        gxp = x.new_empty((d, chunk, mp, np_))
    for b0 in range(0, b, chunk):
        n = min(b, b0 + chunk) - b0
        g = gbuf[:p * n * L].view(p, n * L)                          # dY as [P, n*M'*N']
        g.view(p, n, L).copy_(gy[b0:b0 + n].reshape(n, p, L).transpose(0, 1))
        if need_w:
            c = _columns(read_x(b0, b0 + n), geo.kernel, geo.stride, geo.out, cols)
            gw.addmm_(g, c.t())                                      # dW += dY @ cols^T
        if transposed:
            c = _columns(read_g(b0, b0 + n), (ku, kv), (1, 1), (m, n_), cols)
            r = torch.mm(wf, c, out=xbuf[:d * n * m * n_].view(d, n * m * n_))
            gx[b0:b0 + n] = r.view(d, n, m, n_).transpose(0, 1)
        elif need_x:
            gc = torch.mm(wm.t(), g, out=cols[:k * n * L].view(k, n * L))   # dcols = W^T @ dY
            _col2im(gc.view(d, ku, kv, n, mo, no), gxp[:, :n], geo.stride)
            unplace(gx[b0:b0 + n], gxp[:, :n].transpose(0, 1), geo.pads)
    if need_w:
        gw = uncropped(gw.view(p, d, ku, kv), weight, geo)
    return gx, gw


def _col2im(gc, gxp, stride):
    """gxp[d, b, S*i+u, S*j+v] = sum over taps of gc[d, u, v, b, i, j] (U*V strided adds)."""
    (sh, sw), (_, ku, kv, _, mo, no) = stride, gc.shape
    gxp.zero_()
    for u in range(ku):
        for v in range(kv):
            gxp[:, :, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw] += gc[:, u, v]
