"""The lab's loop operators: the specification the fast ones are tested against.

Written as the lab (and the textbook) state them, one output element at a time; autograd supplies
the backward. Slow (one small tensor op per output element and channel pair): small inputs only.
Arguments are already validated and 4-D (see `_checks`).
"""

from __future__ import annotations

import torch

from ._checks import out_size


def zero_pad(x, padding, value=0.0):
    """Surround x [..., M, N] with padding (ph, pw) rows/columns of `value` (the lab's `new_X`)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    m, n = x.shape[-2:]
    new_x = x.new_full((*x.shape[:-2], m + 2 * ph, n + 2 * pw), value)
    new_x[..., ph:ph + m, pw:pw + n] = x
    return new_x


def correlate2d(x, w, stride=(1, 1)):
    """Formula 5.1 with stride: y[b,i,j] = sum_{u,v} w[u,v] * x[b, S*i+u, S*j+v].

    x [B,M,N], w [U,V] -> y [B,M',N'] with M' = (M - U) // S + 1 (x already padded).
    """
    (m, n), (u, v), (sh, sw) = x.shape[-2:], w.shape, stride
    rows = []
    for i in range(out_size(m, u, 0, sh)):
        row = []
        for j in range(out_size(n, v, 0, sw)):
            window = x[:, sh * i:sh * i + u, sw * j:sw * j + v]   # [B,U,V]
            row.append((window * w).sum(dim=(1, 2)))              # [B]
        rows.append(torch.stack(row, dim=-1))                     # [B,N']
    return torch.stack(rows, dim=-2)                              # [B,M',N']


def conv2d(x, weight, bias, stride, padding):
    """Multi-channel convolution (formula 5.13): Z^p = sum_d W^{p,d} (*) X^d + b^p.

    x [B,D,M,N], weight [P,D,U,V], bias [P] or None -> [B,P,M',N'], M' = (M + 2P - U) // S + 1.
    """
    x = zero_pad(x, padding)
    feature_maps = []
    for p in range(weight.shape[0]):                  # one output feature map Z^p per kernel set
        z = sum(correlate2d(x[:, d], weight[p, d], stride) for d in range(weight.shape[1]))
        if bias is not None:
            z = z + bias[p]
        feature_maps.append(z)
    return torch.stack(feature_maps, dim=1)


def pool2d(x, kernel, stride, padding, mode):
    """Max or average over each U x V window: x [B,C,M,N] -> [B,C,M',N'].

    Max pooling pads with -inf (padding never wins); average pooling pads with zeros and divides by
    the full window size U*V, padding included.
    """
    x = zero_pad(x, padding, float("-inf") if mode == "max" else 0.0)
    (m, n), (u, v), (sh, sw) = x.shape[-2:], kernel, stride
    rows = []
    for i in range(out_size(m, u, 0, sh)):
        row = []
        for j in range(out_size(n, v, 0, sw)):
            window = x[:, :, sh * i:sh * i + u, sw * j:sw * j + v]   # [B,C,U,V]
            if mode == "max":
                # max over dim (not amax): on ties the gradient goes to the first maximum, as torch's
                row.append(window.flatten(2).max(dim=2).values)
            else:
                row.append(window.sum(dim=(2, 3)) / (u * v))
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)
