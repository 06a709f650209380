"""Convolution whose (cropped) kernel covers the whole padded input: a plain matrix product.

The output is 1x1 and the only window is the image itself, so im2col is just a reshape of x:
    y[B, P] = x[B, K] @ W[P, K]^T,   dW = dY^T @ x,   dx = dY @ W      (K = D*U*V)
No copy at all for an uncropped kernel and no padding (LeNet's conv5). ResNet's last stage crops
its 3x3 kernels to the 1x1 or 2x2 taps that meet real pixels; a cropped kernel is flattened in
(u,v,d) order, because copying it in (d,u,v) order would move runs of 1-2 floats.
"""

from __future__ import annotations

import torch

from ._conv_common import cropped, matrix, place, uncropped, unplace


def _order(w_crop):
    """(d,u,v) when the kernel is one block of memory (views all round), else (u,v,d)."""
    return (0, 1, 2, 3) if w_crop.is_contiguous() else (0, 2, 3, 1)


def _flat(x, geo, order):
    """x padded/cropped to exactly the window, flattened per image in the kernel's order."""
    if any(geo.pads):
        x_pad = x.new_zeros((*x.shape[:2], *geo.padded(*x.shape[2:])))
        place(x_pad, x, geo.pads)
        x = x_pad
    return x.permute(order).reshape(x.shape[0], -1)


def _kernel_in_k_order(weight, geo):
    """The cropped kernel permuted to K's order [P, ...], that order, and the permutation that
    brings a tensor in K's order back to [P, D, U, V]."""
    w_crop = cropped(weight, geo)
    order = _order(w_crop)
    return w_crop.permute(order), order, [order.index(i) for i in range(4)]


def forward(x, weight, bias, geo):
    """y [B,P,1,1]; nothing kept for dW (x itself is the columns)."""
    w_k, order, _ = _kernel_in_k_order(weight, geo)
    w_mat = matrix(w_k, w_k.shape[0])                                    # [P, K]
    x_flat = _flat(x, geo, order)
    y = x_flat @ w_mat.t() if bias is None else torch.addmm(bias, x_flat, w_mat.t())
    return y.view(x.shape[0], w_k.shape[0], 1, 1), None


def weight_grad(x, weight, gy, geo, kept_columns=None):
    """dW = dY^T @ x_flat, [P,D,U,V]."""
    w_k, order, inverse = _kernel_in_k_order(weight, geo)
    g = gy.reshape(gy.shape[0], -1)                                     # [B, P]
    gw_crop = (g.t() @ _flat(x, geo, order)).view(w_k.shape).permute(inverse)
    return uncropped(gw_crop, weight, geo)


def input_grad(x, weight, gy, geo):
    """dx = dY @ W, each image's [D, U, V] window put back where it was read."""
    w_k, _, inverse = _kernel_in_k_order(weight, geo)
    g = gy.reshape(gy.shape[0], -1)                                     # [B, P]
    w_mat = matrix(w_k, w_k.shape[0])
    gx_window = (g @ w_mat).view(x.shape[0], *w_k.shape[1:]).permute(inverse)   # [B, D, U, V]
    if not any(geo.pads):
        return gx_window.contiguous()
    gx = x.new_empty(x.shape)
    unplace(gx, gx_window, geo.pads)
    return gx
