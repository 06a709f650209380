"""Convolution whose (cropped) kernel covers the whole padded input: a plain matrix product.

The output is 1x1 and the only window is the image itself, so im2col is just a reshape of x:
    y[B, P] = x[B, K] @ W[P, K]^T,   dW = dY^T @ x,   dx = dY @ W      (K = D*U*V)
No copy at all for an uncropped kernel and no padding (LeNet's conv5). ResNet's last stage crops
its 3x3 kernels to the 1x1 or 2x2 taps that meet real pixels; a cropped kernel is flattened in
(u,v,d) order, because copying it in (d,u,v) order moves runs of 1-2 floats (~10x slower).
"""

from __future__ import annotations

import torch

from ._conv_common import cropped, matrix, place, uncropped, unplace


def _order(wk):
    """(d,u,v) when the kernel is one block of memory (views all round), else (u,v,d)."""
    return (0, 1, 2, 3) if wk.is_contiguous() else (0, 2, 3, 1)


def _flat(x, geo, order):
    """x padded/cropped to exactly the window, flattened per image in the kernel's order."""
    if any(geo.pads):
        xp = x.new_zeros((*x.shape[:2], *geo.padded(*x.shape[2:])))
        place(xp, x, geo.pads)
        x = xp
    return x.permute(order).reshape(x.shape[0], -1)


def forward(x, weight, bias, geo):
    wk = cropped(weight, geo)
    order = _order(wk)
    wf = matrix(wk.permute(order), wk.shape[0])                      # [P, K]
    xf = _flat(x, geo, order)
    y = xf @ wf.t() if bias is None else torch.addmm(bias, xf, wf.t())
    return y.view(x.shape[0], wk.shape[0], 1, 1), None


def backward(x, weight, gy, geo, need_x, need_w, kept=None):
    wk = cropped(weight, geo)
    order = _order(wk)
    inverse = [order.index(i) for i in range(4)]
    shape = wk.permute(order).shape                                   # [P, ...] in K's order
    g = gy.reshape(gy.shape[0], -1)                                   # [B, P]
    gx = gw = None
    if need_w:
        gwk = (g.t() @ _flat(x, geo, order)).view(shape).permute(inverse)
        gw = uncropped(gwk, weight, geo)
    if need_x:
        wf = matrix(wk.permute(order), wk.shape[0])
        gxp = (g @ wf).view(x.shape[0], *shape[1:]).permute(inverse)  # [B, D, U, V]
        if any(geo.pads):
            gx = x.new_empty(x.shape)
            unplace(gx, gxp, geo.pads)
        else:
            gx = gxp.contiguous()
    return gx, gw
