"""2-D convolution and pooling written from the lab's formulas.

One functional API whatever the implementation (`impl`):
- "reference": the lab's loops (formula 5.1 and its stride/padding/multi-channel variants); the spec.
- "fast": vectorised tensor ops with a hand-written backward; never calls torch's conv/pool kernels.
- "native": torch.nn.functional, the reference for tests and benchmarks.

Output size (per spatial dim): M' = (M + 2P - U) // S + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLS = ("reference", "fast", "native")


def conv2d(x, weight, bias=None, stride=1, padding=0, impl="fast"):
    """Cross-correlation of x [B,D,M,N] with weight [P,D,U,V] (+ bias [P]) -> [B,P,M',N'].

    The lab's single-channel form is accepted too: x [B,M,N] with a [U,V] kernel -> [B,M',N'].
    """
    if impl == "native":
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)
    raise NotImplementedError(impl)


def pool2d(x, kernel_size, stride=None, padding=0, mode="max", impl="fast"):
    """Max or average pooling of x [B,C,M,N] -> [B,C,M',N']; stride defaults to kernel_size."""
    if impl == "native":
        stride = kernel_size if stride is None else stride
        if mode == "max":
            return F.max_pool2d(x, kernel_size, stride, padding)
        return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=True)
    raise NotImplementedError(impl)
