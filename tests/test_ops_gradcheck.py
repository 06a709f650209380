"""Float64 `torch.autograd.gradcheck` of every hand-written backward (numerical vs analytic)."""

import pytest
import torch
from torch.autograd import gradcheck

from cnnlab import ops
from cnnlab.ops import fast_conv
from cnnlab.ops.selfcheck import run_op_checks

# (B, D, P, M, N, U, V, stride, padding, algo)
CONV = [
    (2, 2, 3, 6, 5, 3, 2, (1, 1), (1, 0), "im2col"),       # stride 1: flipped-kernel dx
    (2, 3, 2, 6, 5, 3, 2, (1, 1), (1, 0), "unfold"),
    (2, 2, 5, 6, 5, 3, 2, (1, 1), (1, 0), "im2col"),       # P > 2D: col2im dx
    (2, 2, 5, 6, 5, 3, 2, (1, 1), (1, 0), "unfold"),
    (2, 4, 9, 6, 5, 3, 2, (1, 1), (1, 0), "unfold"),       # P > 2D, D >= 4: shifted-products dx
    (1, 2, 2, 7, 7, 3, 3, (2, 2), (1, 1), "im2col"),
    (1, 2, 2, 7, 7, 3, 3, (2, 2), (1, 1), "unfold"),
    (2, 2, 2, 7, 6, 2, 2, (3, 2), (0, 1), "im2col"),       # stride > kernel
    (2, 2, 2, 7, 6, 2, 2, (3, 2), (0, 1), "unfold"),
    (2, 3, 2, 5, 5, 1, 1, (2, 2), (1, 1), "pointwise"),
    (2, 2, 3, 6, 5, 3, 2, (1, 1), (1, 0), "shift"),
    (1, 2, 2, 4, 5, 2, 3, (1, 1), (2, 1), "shift"),        # padding wider than half the kernel
    (2, 2, 3, 4, 3, 4, 3, (1, 1), (0, 0), "matmul"),
    (2, 3, 2, 1, 1, 3, 3, (1, 1), (1, 1), "matmul"),       # cropped to the centre tap
]


def _seeded(*shape):
    gen = torch.Generator().manual_seed(sum(shape))
    return torch.randn(*shape, dtype=torch.float64, generator=gen).requires_grad_()


@pytest.mark.parametrize("case", CONV, ids=str)
def test_conv_backward_gradcheck(case):
    b, d, p, m, n, u, v, stride, padding, algo = case
    x, w, bias = _seeded(b, d, m, n), _seeded(p, d, u, v), _seeded(p)
    assert gradcheck(lambda x, w, bias: fast_conv.conv2d(x, w, bias, stride, padding, algo=algo),
                     (x, w, bias))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))], ids=str)
def test_pool_backward_gradcheck(mode, k, s, p):
    # Random values have no ties, so max pooling is differentiable at these points.
    x = _seeded(2, 2, 7, 6)
    assert gradcheck(lambda t: ops.pool2d(t, k, s, p, mode=mode), (x,))


def test_quick_selfcheck_passes_and_has_the_documented_keys():
    checks = run_op_checks(quick=True)
    assert checks and all(set(c) == {"name", "max_abs_diff", "tolerance", "passed"} for c in checks)
    failed = [c for c in checks if not c["passed"]]
    assert not failed, failed
    names = " ".join(c["name"] for c in checks)
    for part in ("fast/im2col", "fast/unfold", "fast/matmul", "fast/pointwise", "reference",
                 "pool2d fast max", "pool2d fast avg"):
        assert part in names
