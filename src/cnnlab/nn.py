"""Layers built on `cnnlab.ops`: `Conv2D` and `Pool2D`, each with a selectable implementation.

Parameter names and shapes equal torch.nn.Conv2d's (`weight` [P,D,U,V], `bias` [P]), so a model
built on these layers and one built on torch layers share state dicts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab import ops
from cnnlab.ops._checks import POOL_MODES, OpError, check_impl


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Conv2D(nn.Module):
    """Multi-channel 2-D convolution: [B,D,M,N] -> [B,P,M',N'], M' = (M + 2P - U) // S + 1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 impl="fast"):
        super().__init__()
        check_impl("Conv2D", impl)    # fail at construction, not at the first forward
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # Same initialisation as torch.nn.Conv2d, so both LeNet variants start alike.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        weight, bias = self.weight, self.bias
        device = x.device.type
        if (self.impl != "native" and torch.amp.is_autocast_available(device)
                and torch.is_autocast_enabled(device)):
            # What autocast does for torch's conv: input, weight and bias in the low precision
            # (the float32 weights get their gradient through the cast). Our ops are autograd
            # Functions autocast does not know: they run with autocast off, in that dtype.
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
            with torch.autocast(device, enabled=False):
                return ops.conv2d(x, weight, bias, self.stride, self.padding, impl=self.impl)
        return ops.conv2d(x, weight, bias, self.stride, self.padding, impl=self.impl)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, impl={self.impl!r}")


class Pool2D(nn.Module):
    """Max or average pooling: [B,C,M,N] -> [B,C,M',N']; average divides by the window size."""

    def __init__(self, kernel_size=2, stride=None, padding=0, mode="max", impl="fast"):
        super().__init__()
        check_impl("Pool2D", impl)
        if mode not in POOL_MODES:
            raise OpError("Pool2D", f"expected mode in {POOL_MODES}, got {mode!r}")
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self.padding = _pair(padding)
        self.mode = mode
        self.impl = impl

    def forward(self, x):
        return ops.pool2d(x, self.kernel_size, self.stride, self.padding, mode=self.mode,
                          impl=self.impl)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"mode={self.mode!r}, impl={self.impl!r}")
