"""Every bad-input case of issue 2 raises a ValueError naming the operator (expected vs got)."""

import pytest
import torch

from cnnlab import nn as cnn
from cnnlab import ops
from cnnlab.errors import UserError

IMPLS = ["reference", "fast", "native"]

x4 = torch.zeros(2, 3, 8, 8)
w4 = torch.zeros(4, 3, 3, 3)

CONV_CASES = {
    "wrong rank of x": dict(x=torch.zeros(3, 8, 8), weight=w4),
    "wrong rank of weight": dict(x=x4, weight=torch.zeros(4, 3, 3)),
    "5-d x": dict(x=torch.zeros(1, 2, 3, 8, 8), weight=w4),
    "channel mismatch": dict(x=x4, weight=torch.zeros(4, 2, 3, 3)),
    "kernel larger than padded input": dict(x=x4, weight=torch.zeros(4, 3, 11, 3), padding=1),
    "zero stride": dict(x=x4, weight=w4, stride=0),
    "negative stride pair": dict(x=x4, weight=w4, stride=(1, -2)),
    "negative padding": dict(x=x4, weight=w4, padding=-1),
    "float stride": dict(x=x4, weight=w4, stride=1.5),
    "three-element padding": dict(x=x4, weight=w4, padding=(1, 1, 1)),
    "bias length mismatch": dict(x=x4, weight=w4, bias=torch.zeros(3)),
    "bias of rank 2 (the lab's [P,1])": dict(x=x4, weight=w4, bias=torch.zeros(4, 1)),
    "integer x": dict(x=torch.zeros(2, 3, 8, 8, dtype=torch.int64), weight=w4),
    "integer weight": dict(x=x4, weight=torch.zeros(4, 3, 3, 3, dtype=torch.int32)),
    "integer bias": dict(x=x4, weight=w4, bias=torch.zeros(4, dtype=torch.int64)),
    "dtype mismatch": dict(x=x4, weight=w4.double()),
    "not a tensor": dict(x=[[1.0]], weight=w4),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_conv2d_bad_input(case, impl):
    kwargs = dict(CONV_CASES[case])
    with pytest.raises(ValueError, match=r"^conv2d: expected") as info:
        ops.conv2d(**kwargs, impl=impl)
    assert isinstance(info.value, UserError)


POOL_CASES = {
    "wrong rank": dict(x=torch.zeros(8, 8), kernel_size=2),
    "kernel larger than padded input": dict(x=torch.zeros(1, 1, 4, 4), kernel_size=7, padding=1),
    "zero kernel": dict(x=x4, kernel_size=0),
    "zero stride": dict(x=x4, kernel_size=2, stride=0),
    "negative padding": dict(x=x4, kernel_size=2, padding=-1),
    "padding above half the kernel": dict(x=x4, kernel_size=2, padding=2),
    "integer x": dict(x=torch.zeros(1, 1, 4, 4, dtype=torch.uint8), kernel_size=2),
    "unknown mode": dict(x=x4, kernel_size=2, mode="median"),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", POOL_CASES, ids=list(POOL_CASES))
def test_pool2d_bad_input(case, impl):
    with pytest.raises(ValueError, match=r"^pool2d: expected"):
        ops.pool2d(**POOL_CASES[case], impl=impl)


def test_unknown_impl():
    with pytest.raises(ValueError, match=r"^conv2d: expected impl .* got 'cuda'"):
        ops.conv2d(x4, w4, impl="cuda")
    with pytest.raises(ValueError, match=r"^pool2d: expected impl"):
        ops.pool2d(x4, 2, impl="slow")
    with pytest.raises(ValueError, match=r"^Conv2D: expected impl"):
        cnn.Conv2D(3, 4, 3, impl="nope")
    with pytest.raises(ValueError, match=r"^Pool2D: expected mode"):
        cnn.Pool2D(2, mode="sum")


def test_message_says_expected_and_got():
    with pytest.raises(ValueError) as info:
        ops.conv2d(x4, torch.zeros(4, 2, 3, 3))
    message = str(info.value)
    assert "3 input channels" in message and "[4, 2, 3, 3]" in message
    with pytest.raises(ValueError) as info:
        ops.conv2d(x4, w4, bias=torch.zeros(5))
    assert "bias [4]" in str(info.value) and "got bias [5]" in str(info.value)


def test_fast_conv_rejects_algorithm_that_does_not_apply():
    from cnnlab.ops import fast_conv
    with pytest.raises(ValueError, match="does not apply"):
        fast_conv.conv2d(x4, w4, None, (1, 1), (1, 1), algo="pointwise")
    with pytest.raises(ValueError, match="expected algo"):
        fast_conv.conv2d(x4, w4, None, (1, 1), (1, 1), algo="winograd")
