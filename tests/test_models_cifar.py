"""The part-2 models: `resnet18-vision` (paddle.vision / torchvision resnet18) and `resnet18-cifar`.

References are independent of cnnlab: torchvision's resnet18 (and the CIFAR twin Lightning's
baseline builds from it), torch's FlopCounterMode, the lab's published ResNet18 figures and
kuangliu/pytorch-cifar's parameter count. Strict loading both ways in float64 is checked by
`cnnlab check` (models/selfcheck.py, run by test_models.py); here: shapes, names, counts,
Paddle files, and that a comparison can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis.counting import summarize
from cnnlab.cli import main
from cnnlab.errors import UserError
from cnnlab.interop import load_paddle_weights, paddle_state_dict, read_pdparams, write_pdparams
from cnnlab.interop.paddle import model_from_pdparams
from cnnlab.models import build_model, default_input_size
from cnnlab.models.selfcheck import max_abs_diff, randomize_batchnorm
from test_paddle_interop import paddle_vision_arrays  # the Paddle-side reference

INPUT = (1, 3, 32, 32)


def output_shapes(model, x):
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, list(o.shape)))
             for n, m in model.named_children()]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def cifar_twin(num_classes=10):
    """torchvision's resnet18 with a 3x3/1 stem conv without bias and no max-pool."""
    tv = torchvision.models.resnet18(num_classes=num_classes)
    tv.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = nn.Identity()
    return tv


# -------------------------------------------------------------------------- structure
def test_resnet18_vision_is_torchvisions_layout_with_10_classes():
    model = build_model("resnet18-vision")
    tv = torchvision.models.resnet18(num_classes=10)
    assert default_input_size("resnet18-vision") == INPUT
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in tv.state_dict().items()]
    assert model.conv1.bias is None and model.conv1.kernel_size == (7, 7)
    assert model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert output_shapes(model, torch.zeros(INPUT)) == output_shapes(tv, torch.zeros(INPUT)) == {
        "conv1": [1, 64, 16, 16], "bn1": [1, 64, 16, 16], "relu": [1, 64, 16, 16],
        "maxpool": [1, 64, 8, 8], "layer1": [1, 64, 8, 8], "layer2": [1, 128, 4, 4],
        "layer3": [1, 256, 2, 2], "layer4": [1, 512, 1, 1], "avgpool": [1, 512, 1, 1],
        "fc": [1, 10]}


def test_resnet18_cifar_stem_has_no_bias_and_no_max_pool():
    model = build_model("resnet18-cifar")
    assert model.conv1.bias is None and model.conv1.kernel_size == (3, 3)
    assert isinstance(model.maxpool, nn.Identity)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in cifar_twin().state_dict().items()]
    shapes = output_shapes(model, torch.zeros(INPUT))
    assert shapes["conv1"] == shapes["maxpool"] == shapes["layer1"] == [1, 64, 32, 32]
    assert shapes["layer4"] == [1, 512, 4, 4] and shapes["fc"] == [1, 10]


# ---------------------------------------------------------------------------- counting
def _conv_stage_flops(hw, c_in, c_out, stride):
    """FLOPs (the lab's rules: outputs x C_in x k x k, no bias; BN 2 x elements) of one stage
    of two BasicBlocks whose input is c_in x hw x hw."""
    out = hw // stride
    n = c_out * out * out
    flops = n * c_in * 9 + 3 * n * c_out * 9  # first conv, then three 3x3 convs at c_out
    flops += 4 * 2 * n  # four BNs
    if stride != 1 or c_in != c_out:
        flops += n * c_in + 2 * n  # 1x1 downsample conv + its BN
    return flops, out


def _resnet18_flops(stem_out_hw, stem_flops, after_stem_hw):
    flops = stem_flops + 2 * 64 * stem_out_hw ** 2  # stem conv + bn1
    hw = after_stem_hw
    for c_in, c_out, stride in ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)):
        f, hw = _conv_stage_flops(hw, c_in, c_out, stride)
        flops += f
    return flops + 512 * (hw * hw + 1) + 512 * 10  # adaptive avg pool, fc (no bias)


@pytest.mark.parametrize("name, trainable, flops", [
    # torchvision's resnet18(num_classes=10): 11,181,642 parameters. FLOPs: the lab's published
    # 35,529,728 (1x32x32, stem with bias: 16,384 x 50 = 819,200) with the stem at 3 channels
    # and no bias (16,384 x 147).
    ("resnet18-vision", 11_181_642, 35_529_728 - 819_200 + 16_384 * 147),
    # kuangliu/pytorch-cifar's ResNet18: 11,173,962 parameters.
    ("resnet18-cifar", 11_173_962, None),
])
def test_params_and_flops_by_the_lab_rules(name, trainable, flops):
    model = build_model(name)
    s = summarize(model, INPUT)
    assert s.trainable_params == trainable and s.buffer_values == 9_600
    assert s.lab_params == trainable + 9_600 and not s.uncounted
    if name == "resnet18-vision":
        assert s.flops == flops == _resnet18_flops(16, 64 * 16 * 16 * 147, 8)
        twin = torchvision.models.resnet18(num_classes=10)
    else:
        assert s.flops == _resnet18_flops(32, 64 * 32 * 32 * 27, 32) == 556_660_224
        twin = cifar_twin()
    assert sum(p.numel() for p in twin.parameters()) == trainable
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(INPUT))
    assert counter.get_total_flops() == 2 * s.macs  # torch counts a multiply-add as 2


def test_summary_cli_defaults_to_three_channels(capsys):
    import json

    assert main(["summary", "resnet18-vision", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_size"] == [1, 3, 32, 32]
    assert (data["lab_params"], data["flops"]) == (11_191_242, 37_118_976)
    assert main(["summary", "resnet18-vision", "--input-size", "1,1,32,32"]) == 2
    assert "3 input channel" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Paddle
@pytest.mark.parametrize("name, twin", [("resnet18-vision", torchvision.models.resnet18),
                                        ("resnet18-cifar", cifar_twin)])
def test_paddle_vision_weights_load_and_match_torchvision(name, twin):
    torch.manual_seed(3)
    tv = randomize_batchnorm(twin(num_classes=10), torch.Generator().manual_seed(3)).eval()
    model = build_model(name).eval()
    assert load_paddle_weights(model, paddle_vision_arrays(tv)).layout == "paddle-vision"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)
        # The comparison can fail: a shortcut BN left unloaded (the lab's 'shorcutt') shows.
        model.layer2[0].downsample[1].reset_running_stats()
        model.layer2[0].downsample[1].reset_parameters()
        assert max_abs_diff(model(x), tv(x)) > 1e-3


@pytest.mark.parametrize("name, kwargs, layout", [  # resnet18-vision: the next test
    ("resnet18-cifar", {}, "paddle-vision"),
    ("resnet18-cifar", {"stem_bias": True}, "lab"),  # the lab's names, a [64,3,3,3] stem
])
def test_paddle_round_trip(tmp_path, name, kwargs, layout):
    torch.manual_seed(0)
    src = randomize_batchnorm(build_model(name, **kwargs), torch.Generator().manual_seed(0))
    path = tmp_path / "w.pdparams"
    assert write_pdparams(src.eval(), path).layout == layout
    arrays = read_pdparams(path)
    stem = "net.0.0.weight" if layout == "lab" else "conv1.weight"
    assert arrays[stem].shape == tuple(src.conv1.weight.shape)
    torch.manual_seed(1)
    dst = build_model(name, **kwargs).eval()
    assert load_paddle_weights(dst, path).layout == layout
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_the_notebooks_1000_class_file_and_wrong_models(tmp_path):
    # The notebook trained paddle.vision's resnet18 without num_classes=10: a 1000-way head.
    # Its file rebuilds as it is (classes and stem read off the file, the same outputs), and a
    # CIFAR-stem model refuses it by the stem's shape.
    torch.manual_seed(0)
    path = tmp_path / "best_model.pdparams"
    src = randomize_batchnorm(build_model("resnet18-vision", num_classes=1000),
                              torch.Generator().manual_seed(0)).eval()
    assert write_pdparams(src, path).layout == "paddle-vision"
    model, payload, info = model_from_pdparams(path, "resnet18-vision")
    assert model.fc.out_features == 1000 and info.layout == "paddle-vision"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    assert payload["model"]["kwargs"] == {"in_channels": 3, "num_classes": 1000,
                                          "stem_bias": False}
    with pytest.raises(UserError, match=r"conv1.weight \[64,3,7,7\], needs \[64,3,3,3\]"):
        load_paddle_weights(build_model("resnet18-cifar", num_classes=1000), path)
    arrays, _ = paddle_state_dict(build_model("resnet18-vision"))
    assert np.array_equal(arrays["fc.weight"].shape, (512, 10))
