"""2-D convolution and pooling written from the lab's formulas.

One functional API whatever the implementation (`impl`):
- "reference": the lab's loops (formula 5.1 and its stride/padding/multi-channel variants); the spec.
- "fast": vectorised tensor ops with a hand-written backward; never calls torch's conv/pool kernels.
- "native": torch.nn.functional, the reference for tests and benchmarks.

Output size (per spatial dim): M' = (M + 2P - U) // S + 1.
Bad arguments raise `OpError` (a ValueError) naming the operator and saying expected vs got.
"""

from __future__ import annotations

import torch.nn.functional as F

from . import fast_conv, fast_pool, reference
from ._checks import IMPLS, POOL_MODES, OpError, check_conv, check_pool

# The lab's edge detector is built on conv2d: `cnnlab.ops.edges` (laplacian_edges, edge_images).
__all__ = ["conv2d", "pool2d", "OpError", "IMPLS", "POOL_MODES"]


def conv2d(x, weight, bias=None, stride=1, padding=0, impl="fast"):
    """Cross-correlation of x [B,D,M,N] with weight [P,D,U,V] (+ bias [P]) -> [B,P,M',N'].

    stride and padding: an int or an (h, w) pair. The lab's single-channel form is accepted too:
    x [B,M,N] with a [U,V] kernel (bias: one value) -> [B,M',N'].
    """
    args = check_conv(x, weight, bias, stride, padding, impl)
    if impl == "native":
        y = F.conv2d(args.x, args.weight, args.bias, stride=args.stride, padding=args.padding)
    elif impl == "reference":
        y = reference.conv2d(args.x, args.weight, args.bias, args.stride, args.padding)
    else:
        y = fast_conv.conv2d(args.x, args.weight, args.bias, args.stride, args.padding)
    return y[:, 0] if args.single_channel else y


def pool2d(x, kernel_size, stride=None, padding=0, mode="max", impl="fast"):
    """Max or average pooling of x [B,C,M,N] (or [C,M,N]) -> [B,C,M',N'].

    stride defaults to kernel_size (non-overlapping windows). Max pooling ignores the padding;
    average pooling divides by the full window size U*V, padding included (the lab's mean).
    """
    args = check_pool(x, kernel_size, stride, padding, mode, impl)
    if impl == "native":
        if mode == "max":
            y = F.max_pool2d(args.x, args.kernel, args.stride, args.padding)
        else:
            y = F.avg_pool2d(args.x, args.kernel, args.stride, args.padding, count_include_pad=True)
    elif impl == "reference":
        y = reference.pool2d(args.x, args.kernel, args.stride, args.padding, mode)
    else:
        y = fast_pool.pool2d(args.x, args.kernel, args.stride, args.padding, mode)
    return y[0] if args.unbatched else y
