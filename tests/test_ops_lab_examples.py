"""The lab's worked examples (section 5.1-5.2), computed by hand in the lab text, for every impl."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab import nn as cnn
from cnnlab import ops
from cnnlab.ops.edges import laplacian_edges

IMPLS = ["reference", "fast", "native"]


@pytest.mark.parametrize("impl", IMPLS)
def test_formula_5_1_example(impl):
    # Lab 5.1.2: input [[1..9]] with kernel [[0,1],[2,3]] -> [[25,31],[43,49]] (single-channel form).
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    kernel = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    y = ops.conv2d(x, kernel, impl=impl)
    assert y.shape == (1, 2, 2)
    assert torch.equal(y, torch.tensor([[[25.0, 31.0], [43.0, 49.0]]]))


@pytest.mark.parametrize("impl", IMPLS)
def test_multichannel_example(impl):
    # Lab 5.2.1.2: 2 input channels, 3 kernels of ones, zero bias -> [[20,28],[44,52]] three times.
    x = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]])
    layer = cnn.Conv2D(in_channels=2, out_channels=3, kernel_size=2, impl=impl)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    y = layer(x)
    assert y.shape == (1, 3, 2, 2)
    assert torch.equal(y, torch.tensor([[20.0, 28.0], [44.0, 52.0]]).expand(1, 3, 2, 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_pool_example(impl):
    # Lab 5.2.2: 4x4 of 1..16, 2x2 windows, stride 2.
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    assert torch.equal(ops.pool2d(x, 2, 2, mode="max", impl=impl),
                       torch.tensor([[[[6.0, 8.0], [14.0, 16.0]]]]))
    assert torch.equal(cnn.Pool2D(2, 2, mode="avg", impl=impl)(x),
                       torch.tensor([[[[3.5, 5.5], [11.5, 13.5]]]]))


@pytest.mark.parametrize("impl", IMPLS)
def test_stride_padding_shapes(impl):
    # Lab 5.1.6: [2,8,8] with a 3x3 kernel, padding 1: stride 1 keeps 8x8, stride 2 gives 4x4.
    x = torch.randn(2, 8, 8)
    kernel = torch.ones(3, 3)
    assert ops.conv2d(x, kernel, stride=1, padding=1, impl=impl).shape == (2, 8, 8)
    assert ops.conv2d(x, kernel, stride=2, padding=1, impl=impl).shape == (2, 4, 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_single_channel_form_matches_torch(impl):
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    kernel = torch.randn(3, 2, dtype=torch.float64)
    bias = torch.tensor([0.5], dtype=torch.float64)
    y = ops.conv2d(x, kernel, bias, stride=(2, 1), padding=1, impl=impl)
    expected = F.conv2d(x[:, None], kernel[None, None], bias, stride=(2, 1), padding=1)[:, 0]
    torch.testing.assert_close(y, expected)


def test_layers_share_torch_parameter_names_and_shapes():
    ours = cnn.Conv2D(3, 5, (3, 2), stride=2, padding=1)
    theirs = torch.nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
           {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(ours(x), theirs(x))
    assert cnn.Conv2D(3, 5, 3, bias=False).bias is None


@pytest.mark.parametrize("impl", IMPLS)
def test_laplacian_matches_torch(impl):
    kernel = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])
    image = torch.randint(0, 256, (2, 20, 17), dtype=torch.uint8)
    expected = F.conv2d(image.float()[:, None], kernel[None, None])
    torch.testing.assert_close(laplacian_edges(image[:, None], impl=impl), expected)
    torch.testing.assert_close(laplacian_edges(image, impl=impl), expected[:, 0])
    torch.testing.assert_close(laplacian_edges(image[0], impl=impl), expected[0, 0])


def test_laplacian_of_flat_image_is_zero_and_finds_a_square():
    image = torch.zeros(8, 8)
    image[3:5, 3:5] = 1.0
    edges = laplacian_edges(image)
    assert edges.shape == (6, 6)
    assert edges[2:4, 2:4].min() > 0          # inside the square's border: 8 - neighbours > 0
    assert laplacian_edges(torch.full((5, 5), 7.0)).abs().max() == 0


def test_laplacian_rejects_colour_image():
    with pytest.raises(ValueError, match="laplacian_edges"):
        laplacian_edges(torch.zeros(1, 3, 8, 8))
