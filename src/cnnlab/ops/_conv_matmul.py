"""Convolution whose (cropped) kernel covers the whole padded input: a plain matrix product.

The output is 1x1 and the only window is the image itself, so im2col is just a reshape of x:
    y[B, P] = x[B, D*U*V] @ W[P, D*U*V]^T,   dW = dY^T @ x,   dx = dY @ W.
No copy at all when no padding is left after cropping (LeNet's conv5; ResNet's last stage, whose
3x3 kernels on 1x1 and 2x2 inputs crop to 1x1 and 2x2).
"""

from __future__ import annotations

import torch

from ._conv_common import cropped, place, uncropped, unplace


def _flat(x, geo):
    """x padded/cropped to exactly the window, flattened per image in (d,u,v) order."""
    if any(geo.pads):
        top, bottom, left, right = geo.pads
        xp = x.new_zeros((*x.shape[:2], *geo.padded(*x.shape[2:])))
        place(xp, x, geo.pads)
        x = xp
    return x.reshape(x.shape[0], -1)


def forward(x, weight, bias, geo):
    wk = cropped(weight, geo)
    wf = wk.reshape(wk.shape[0], -1)                                  # [P, D*U*V]
    xf = _flat(x, geo)
    y = xf @ wf.t() if bias is None else torch.addmm(bias, xf, wf.t())
    return y.view(x.shape[0], wk.shape[0], 1, 1)


def backward(x, weight, gy, geo, need_x, need_w):
    wk = cropped(weight, geo)
    g = gy.reshape(gy.shape[0], -1)                                   # [B, P]
    gx = gw = None
    if need_w:
        gw = uncropped((g.t() @ _flat(x, geo)).view(wk.shape), weight, geo)
    if need_x:
        gxp = (g @ wk.reshape(wk.shape[0], -1)).view(x.shape[0], x.shape[1], *geo.kernel)
        if any(geo.pads):
            gx = x.new_empty(x.shape)
            unplace(gx, gxp, geo.pads)
        else:
            gx = gxp
    return gx, gw
