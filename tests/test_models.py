"""Models: the lab's LeNet-5 and ResNet18, checked against the lab's printouts and torchvision."""

import pytest
import torch
import torchvision
from torch import nn

from cnnlab import nn as cnn
from cnnlab.errors import UserError
from cnnlab.models import MODEL_NAMES, build_model, default_input_size
from cnnlab.models.selfcheck import (check_lenet, check_resnet18, max_abs_diff,
                                     run_model_checks)

# The lab's printout of LeNet's layer-by-layer output shapes (section 5.3.2) for a [1,1,32,32] input.
LAB_LENET_SHAPES = {
    "conv1": [1, 6, 28, 28],
    "pool2": [1, 6, 14, 14],
    "conv3": [1, 16, 10, 10],
    "pool4": [1, 16, 5, 5],
    "conv5": [1, 120, 1, 1],
    "linear6": [1, 84],
    "linear7": [1, 10],
}
# The lab's parameter shapes (its biases are [P,1]; ours are [P] like torch's) and, from the text,
# the per-layer counts 156 + 2416 + 48120 + 10164 + 850 = 61706.
LAB_LENET_PARAMS = {
    "conv1.weight": [6, 1, 5, 5], "conv1.bias": [6],
    "conv3.weight": [16, 6, 5, 5], "conv3.bias": [16],
    "conv5.weight": [120, 16, 5, 5], "conv5.bias": [120],
    "linear6.weight": [84, 120], "linear6.bias": [84],
    "linear7.weight": [10, 84], "linear7.bias": [10],
}


def output_shapes(model, x):
    """{child name: output shape} of the model's direct children, by forward hooks (eval mode:
    BatchNorm cannot train on one image at 1x1)."""
    model.eval()
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, list(o.shape)))
             for n, m in model.named_children()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def random_bn(model, seed=0):
    """Non-default BN running statistics and affine parameters (defaults hide unloaded BNs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.3, generator=g)
    return model


# ------------------------------------------------------------------------------------- registry

def test_unknown_model_lists_known_names():
    with pytest.raises(UserError) as err:
        build_model("lenet5")
    for name in MODEL_NAMES:
        assert name in str(err.value)
    assert set(MODEL_NAMES) == {"lenet", "lenet-native", "resnet18", "resnet18-plain",
                                "resnet18-vision", "resnet18-cifar"}


@pytest.mark.parametrize("name, kwargs", [
    ("lenet-native", {"conv_impl": "fast"}),
    ("lenet", {"stem_bias": False}),
    ("resnet18", {"use_residual": False}),
    ("resnet18", {"conv_impl": "cuda"}),
    ("resnet18", {"stem_bias": "no"}),
    ("lenet", {"in_channels": 0}),
    ("lenet", {"num_classes": 2.5}),
])
def test_bad_kwargs_are_user_errors(name, kwargs):
    with pytest.raises(UserError, match=name):
        build_model(name, **kwargs)


def test_default_channels():
    assert default_input_size("lenet") == (1, 1, 32, 32)
    assert default_input_size("resnet18") == (1, 1, 32, 32)
    assert default_input_size("resnet18-cifar") == (1, 3, 32, 32)
    assert build_model("resnet18-cifar").conv1.weight.shape[1] == 3
    assert build_model("resnet18-cifar", in_channels=1).conv1.weight.shape[1] == 1
    assert build_model("resnet18").conv1.weight.shape[1] == 1
    assert build_model("lenet-native", num_classes=7).linear7.out_features == 7


# ---------------------------------------------------------------------------------------- LeNet

@pytest.mark.parametrize("name, kwargs", [("lenet-native", {}), ("lenet", {}),
                                          ("lenet", {"conv_impl": "native"})])
def test_lenet_shapes_layer_by_layer_as_the_lab(name, kwargs):
    model = build_model(name, **kwargs)
    assert output_shapes(model, torch.randn(1, 1, 32, 32)) == LAB_LENET_SHAPES


def test_lenet_layers_as_the_lab():
    custom, native = build_model("lenet"), build_model("lenet-native")
    assert isinstance(custom.conv1, cnn.Conv2D) and isinstance(custom.pool4, cnn.Pool2D)
    assert (custom.pool2.mode, custom.pool4.mode) == ("max", "avg")
    assert isinstance(native.pool2, nn.MaxPool2d) and isinstance(native.pool4, nn.AvgPool2d)
    for model in (custom, native):
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes == LAB_LENET_PARAMS
        assert sum(p.numel() for p in model.parameters()) == 156 + 2416 + 48120 + 10164 + 850


@pytest.mark.parametrize("conv_impl", ["fast", "native"])
def test_lenet_weights_move_both_ways(conv_impl):
    torch.manual_seed(0)
    native = build_model("lenet-native")
    custom = build_model("lenet", conv_impl=conv_impl)
    x = torch.randn(3, 1, 32, 32)
    custom.load_state_dict(native.state_dict())  # strict
    torch.testing.assert_close(custom(x), native(x), rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    custom = build_model("lenet", conv_impl=conv_impl)
    native.load_state_dict(custom.state_dict())  # strict, the other way
    torch.testing.assert_close(native(x), custom(x), rtol=1e-4, atol=1e-5)
    assert max_abs_diff(native(x), build_model("lenet-native")(x)) > 1e-3  # weights matter


# --------------------------------------------------------------------------------------- ResNet

def test_resnet18_shapes_as_the_lab():
    # paddle.summary of the lab's ResNet18 on [1,1,32,32].
    model = build_model("resnet18")
    assert output_shapes(model, torch.randn(1, 1, 32, 32)) == {
        "conv1": [1, 64, 16, 16], "bn1": [1, 64, 16, 16], "relu": [1, 64, 16, 16],
        "maxpool": [1, 64, 8, 8], "layer1": [1, 64, 8, 8], "layer2": [1, 128, 4, 4],
        "layer3": [1, 256, 2, 2], "layer4": [1, 512, 1, 1], "avgpool": [1, 512, 1, 1],
        "fc": [1, 10]}
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.conv1.bias is not None  # the lab's stem conv has a bias
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)


def test_resnet18_cifar_stem():
    model = build_model("resnet18-cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    shapes = output_shapes(model, torch.randn(1, 3, 32, 32))
    assert shapes["maxpool"] == shapes["conv1"] == [1, 64, 32, 32]
    assert shapes["layer4"] == [1, 512, 4, 4] and shapes["fc"] == [1, 10]


def test_resnet18_parameter_names_are_torchvisions():
    ours = build_model("resnet18", in_channels=3, num_classes=1000)
    tv = torchvision.models.resnet18(weights=None)
    assert set(ours.state_dict()) - set(tv.state_dict()) == {"conv1.bias"}
    assert set(tv.state_dict()) <= set(ours.state_dict())
    ours = build_model("resnet18", in_channels=3, num_classes=1000, stem_bias=False)
    assert list(ours.state_dict()) == list(tv.state_dict())


@pytest.mark.parametrize("direction", ["torchvision->ours", "ours->torchvision"])
def test_resnet18_torchvision_round_trip(direction):
    torch.manual_seed(0)
    ours = build_model("resnet18", in_channels=3, num_classes=1000, stem_bias=False)
    tv = torchvision.models.resnet18(weights=None)
    source, target = (tv, ours) if direction == "torchvision->ours" else (ours, tv)
    random_bn(source)
    target.load_state_dict(source.state_dict())  # strict: every key, every shape
    ours.eval(), tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, ref = ours(x), tv(x)
    assert out.shape == (2, 1000)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # The comparison can fail: a shortcut BN left at its defaults (the lab's 'shorcutt' bug) shows.
    target.layer2[0].downsample[1].reset_parameters()
    target.layer2[0].downsample[1].reset_running_stats()
    with torch.no_grad():
        assert max_abs_diff(ours(x), tv(x)) > 1e-3


def test_default_bn_statistics_would_hide_an_unloaded_shortcut():
    # Why the check randomises BN: with default statistics an unloaded BN changes nothing.
    ours = build_model("resnet18", in_channels=3, num_classes=1000, stem_bias=False).eval()
    tv = torchvision.models.resnet18(weights=None).eval()
    ours.load_state_dict(tv.state_dict())
    ours.layer2[0].downsample[1].reset_parameters()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(ours(x), tv(x)) < 1e-5


def test_use_residual_switch_changes_the_output():
    torch.manual_seed(0)
    res, plain = build_model("resnet18"), build_model("resnet18-plain")
    assert res.layer2[0].use_residual and not plain.layer2[0].use_residual
    plain.load_state_dict(res.state_dict())  # strict: the plain net keeps the shortcut layers
    res.eval(), plain.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert max_abs_diff(res(x), plain(x)) > 1e-3
        before_res, before_plain = res(x), plain(x)
        for model in (res, plain):
            model.layer3[0].downsample[0].weight.mul_(3.0)
        assert max_abs_diff(res(x), before_res) > 1e-4        # the shortcut is used ...
        assert max_abs_diff(plain(x), before_plain) == 0.0    # ... or not at all


@pytest.mark.parametrize("name, kwargs", [(n, {}) for n in MODEL_NAMES]
                         + [("resnet18", {"conv_impl": "fast"})])
def test_output_shape_and_gradient_reaches_input(name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    c = default_input_size(name)[1]
    x = torch.randn(2, c, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    unused = {n for n, _ in model.named_parameters() if "downsample" in n} \
        if name == "resnet18-plain" else set()
    for n, p in model.named_parameters():
        assert (p.grad is None) == (n in unused), n


def test_fast_resnet18_matches_native():
    torch.manual_seed(0)
    native = random_bn(build_model("resnet18")).eval()
    fast = build_model("resnet18", conv_impl="fast").eval()
    assert isinstance(fast.conv1, cnn.Conv2D) and isinstance(fast.maxpool, cnn.Pool2D)
    fast.load_state_dict(native.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), native(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------- model checks

def test_model_checks_pass_and_have_the_contract_keys():
    checks = run_model_checks()
    assert len(checks) >= 6
    for c in checks:
        assert {"name", "max_abs_diff", "tolerance", "passed"} <= set(c)
        assert c["passed"], c
    names = " ".join(c["name"] for c in checks)
    assert "ours->torchvision" in names and "torchvision->ours" in names
    for model in ("resnet18-vision", "resnet18-cifar"):  # the part-2 models, both ways
        for direction in ("ours->torchvision", "torchvision->ours"):
            assert any(c["name"].startswith(f"{model}[native]") and direction in c["name"]
                       for c in checks), (model, direction)


@pytest.mark.parametrize("error, passes", [(1e-3, False), (1e-12, True)])
def test_model_check_measures_the_error_and_tolerates_only_rounding(monkeypatch, error, passes):
    # A native LeNet whose output is off by `error`: the check reports exactly that difference
    # and fails it unless it is at float64 rounding level (the tolerance is 1e-9 relative).
    from cnnlab.models import lenet
    monkeypatch.setattr(lenet.NativeLeNet, "forward", lambda self, x: lenet.LeNet.forward(self, x)
                        + error)
    output = check_lenet("native", grads=False)[0]
    assert output["max_abs_diff"] == pytest.approx(error, rel=1e-3)
    assert output["passed"] is passes


def test_resnet_check_reports_instead_of_raising():
    result = check_resnet18("no-such-impl")
    assert result["passed"] is False and result["error"]
