"""Formula 5.13 of the lab written out with real numbers for one output pixel of a conv layer.

    z^p[i,j] = sum_d sum_u sum_v W^{p,d}[u,v] * X^d[S*i + u - P, S*j + v - P]  +  b^p

(X is zero outside the input: that is the padding P.) `conv_formula` returns the window of the
layer's input (all D channels, with a mask of the padded cells), the kernel W^{p,d}, their
elementwise products, the per-channel sums, the total, the bias and the value; next to it the same
value from `cnnlab.ops.conv2d(window, kernel, bias, impl="reference")` (the lab's loops) and the
value the model's own forward pass produced at that pixel, with the largest difference between
the three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab import ops


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(int(a) for a in v)


def _g(value) -> float:
    return float(f"{float(value):.6g}")  # 6 significant digits: a readable, compact table entry


def _grid(t: torch.Tensor) -> list:
    return [[_g(v) for v in row] for row in t.tolist()]


def conv_formula(conv, x: torch.Tensor, z: torch.Tensor, p: int, i: int, j: int) -> dict:
    """conv: a Conv2d/Conv2D; x: its input [D,H,W]; z: its output [P,H',W'] from the same pass."""
    if getattr(conv, "groups", 1) != 1 or _pair(getattr(conv, "dilation", 1)) != (1, 1):
        raise ValueError("formula 5.13 is shown for ungrouped, undilated convolutions only")
    weight = conv.weight.detach().float()
    n_out, depth, u, v = weight.shape
    (sh, sw), (ph, pw) = _pair(conv.stride), _pair(conv.padding)
    for name, value, limit in (("p", p, n_out), ("i", i, z.shape[1]), ("j", j, z.shape[2])):
        if not 0 <= value < limit:
            raise ValueError(f"{name}={value} is outside the output [{n_out}, {z.shape[1]}, "
                             f"{z.shape[2]}] of this layer")
    x = x.float()
    height, width = x.shape[1:]
    padded = F.pad(x, (pw, pw, ph, ph))                                  # [D, H+2P, W+2P]
    window = padded[:, sh * i:sh * i + u, sw * j:sw * j + v]             # [D,U,V]
    rows = torch.arange(sh * i - ph, sh * i - ph + u)
    cols = torch.arange(sw * j - pw, sw * j - pw + v)
    pad = ((rows < 0) | (rows >= height))[:, None] | ((cols < 0) | (cols >= width))[None, :]
    kernel = weight[p]                                                   # W^{p,d}: [D,U,V]
    products = window * kernel
    partial = products.sum(dim=(1, 2))                                   # [D]
    total = products.sum()
    bias = conv.bias.detach().float()[p] if conv.bias is not None else None
    value = total + (bias if bias is not None else 0.0)
    reference = ops.conv2d(window[None], kernel[None], None if bias is None else bias[None],
                           impl="reference")[0, 0, 0, 0]
    map_value = z[p, i, j].float()
    candidates = torch.stack([value, reference, map_value]).double()
    max_diff = float(candidates.max() - candidates.min())
    scale = float(products.abs().sum()) + (abs(float(bias)) if bias is not None else 0.0)
    tolerance = 1e-5 * max(scale, 1.0)  # float32 sums in different orders
    return {
        "p": p, "i": i, "j": j,
        "kernel_size": [u, v], "stride": [sh, sw], "padding": [ph, pw],
        "input_shape": [depth, height, width], "output_shape": list(z.shape),
        "origin": [sh * i - ph, sw * j - pw],   # window's top-left in input coordinates
        "pad": pad.tolist(),
        "channels": [{"d": d, "window": _grid(window[d]), "kernel": _grid(kernel[d]),
                      "products": _grid(products[d]), "sum": float(partial[d])}
                     for d in range(depth)],
        "sum": float(total), "bias": None if bias is None else float(bias),
        "value": float(value), "reference": float(reference), "map_value": float(map_value),
        "max_abs_diff": max_diff, "tolerance": tolerance, "agree": max_diff <= tolerance,
    }
