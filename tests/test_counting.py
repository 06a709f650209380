"""Accounting: the lab's hand-computed and printed figures, and MACs against torch's FlopCounterMode."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab import nn as cnn
from cnnlab.analysis import count_params, summarize
from cnnlab.models import build_model

# The lab's paddle.flops table for LeNet (section 5.3.2), row by row.
LAB_LENET_ROWS = [
    # name, input shape, output shape, params, FLOPs
    ("conv1", [1, 1, 32, 32], [1, 6, 28, 28], 156, 28 * 28 * 5 * 5 * 6 * 1 + 28 * 28 * 6),
    ("pool2", [1, 6, 28, 28], [1, 6, 14, 14], 0, 0),
    ("conv3", [1, 6, 14, 14], [1, 16, 10, 10], 2416, 10 * 10 * 5 * 5 * 16 * 6 + 10 * 10 * 16),
    ("pool4", [1, 16, 10, 10], [1, 16, 5, 5], 0, 16 * 5 * 5),
    ("conv5", [1, 16, 5, 5], [1, 120, 1, 1], 48120, 5 * 5 * 120 * 16 + 120),
    ("linear6", [1, 120], [1, 84], 10164, 120 * 84),
    ("linear7", [1, 84], [1, 10], 850, 84 * 10),
]


@pytest.mark.parametrize("name, kwargs", [("lenet", {}), ("lenet", {"conv_impl": "native"}),
                                          ("lenet-native", {})])
def test_lenet_rows_and_totals_as_the_lab(name, kwargs):
    s = summarize(build_model(name, **kwargs), (1, 1, 32, 32))
    rows = [(r.name, r.input_shape, r.output_shape, r.params, r.flops) for r in s.layers]
    assert rows == LAB_LENET_ROWS
    assert [r.flops for r in s.layers] == [122304, 0, 241600, 400, 48120, 10080, 840]
    assert (s.lab_params, s.trainable_params, s.buffer_values) == (61706, 61706, 0)
    assert s.flops == 423344
    assert s.macs == 28 * 28 * 25 * 6 + 10 * 10 * 25 * 6 * 16 + 25 * 16 * 120 + 120 * 84 + 84 * 10
    assert s.uncounted == []


def test_resnet18_totals_as_the_lab():
    s = summarize(build_model("resnet18"), (1, 1, 32, 32))
    bn_channels = 64 + 4 * 64 + (4 * 128 + 128) + (4 * 256 + 256) + (4 * 512 + 512)
    assert s.buffer_values == 2 * bn_channels == 9600
    assert s.trainable_params == 11175434
    assert s.lab_params == 11185034  # paddle.summary "Total params"
    assert s.flops == 35529728       # paddle.flops
    assert s.uncounted == []
    assert sum(r.params for r in s.layers) == s.lab_params
    by_name = {}
    for r in s.layers:
        by_name.setdefault(r.name, r)
    # Rows the lab printed: (params, FLOPs).
    expected = {
        "conv1": (3200, 64 * 16 * 16 * 49 + 64 * 16 * 16),     # 819,200: stem conv with bias
        "bn1": (256, 2 * 64 * 16 * 16),                        # 32,768
        "relu": (0, 0),
        "maxpool": (0, 0),
        "layer1.0.conv1": (36864, 2359296),
        "layer1.0.bn1": (256, 8192),
        "layer2.0.conv1": (73728, 1179648),
        "layer2.0.downsample.0": (8192, 131072),
        "layer2.0.downsample.1": (512, 4096),
        "layer4.1.bn2": (2048, 1024),
        "avgpool": (0, 512 * (1 + 1)),                          # 1,024
        "fc": (5130, 5120),
    }
    assert {k: (by_name[k].params, by_name[k].flops) for k in expected} == expected


def test_running_stats_exclude_num_batches_tracked():
    model = build_model("resnet18")
    all_buffers = sum(b.numel() for b in model.buffers())
    assert all_buffers == 9600 + 20  # 20 BatchNorms, one num_batches_tracked each
    assert count_params(model) == {"trainable_params": 11175434, "buffer_values": 9600,
                                   "lab_params": 11185034}
    model.fc.weight.requires_grad_(False)
    assert count_params(model)["trainable_params"] == 11175434 - 5120
    assert count_params(model)["lab_params"] == 11185034


def test_plain_resnet_lists_unused_shortcut_layers():
    s = summarize(build_model("resnet18-plain"), (1, 1, 32, 32))
    unused = [r for r in s.layers if r.note == "not called"]
    assert [r.name for r in unused] == [f"layer{i}.0.downsample.{j}" for i in (2, 3, 4)
                                        for j in (0, 1)]
    assert all(r.flops == 0 and r.input_shape is None for r in unused)
    assert s.lab_params == 11185034  # the lab's count: the shortcut layers exist
    # 35,529,728 minus the three shortcut convs (131,072 each) and BNs (4,096 + 2,048 + 1,024).
    assert s.flops == 35529728 - 3 * 131072 - (4096 + 2048 + 1024)


def test_flops_scale_with_batch():
    model = build_model("lenet-native")
    assert summarize(model, (3, 1, 32, 32)).flops == 3 * 423344


@pytest.mark.parametrize("name, size", [("lenet-native", (2, 1, 32, 32)),
                                        ("resnet18", (2, 1, 32, 32)),
                                        ("resnet18-plain", (2, 1, 48, 48)),
                                        ("resnet18-cifar", (2, 3, 32, 32))])
def test_macs_match_torch_flop_counter(name, size):
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate of aten.convolution and aten.addmm
    # (bias ignored) and nothing for BatchNorm, pooling or ReLU: so it must equal 2 x our MACs.
    model = build_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(size))
    assert counter.get_total_flops() == 2 * summarize(model, size).macs


def test_summarize_leaves_the_model_as_it_was():
    model = build_model("resnet18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, (2, 1, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks for m in model.modules())


def test_layer_without_rule_is_uncounted_not_zero():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    model = nn.Sequential(nn.Conv2d(1, 2, 3), Square(), nn.Tanh(), nn.Flatten())
    s = summarize(model, (1, 1, 5, 5))
    flops = {r.name: r.flops for r in s.layers}
    assert flops == {"0": 2 * 3 * 3 * 9 + 2 * 3 * 3, "1": None, "2": None, "3": 0}
    assert s.uncounted == ["1 (Square)", "2 (Tanh)"]
    assert s.flops == 2 * 3 * 3 * 10


def test_custom_layers_count_like_torch_layers():
    x = (1, 4, 9, 9)
    pairs = [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), cnn.Conv2D(4, 6, 3, stride=2, padding=1,
                                                             impl="native")),
        (nn.Conv2d(4, 6, (3, 2), bias=False), cnn.Conv2D(4, 6, (3, 2), bias=False,
                                                         impl="native")),
        (nn.MaxPool2d(3, 2, 1), cnn.Pool2D(3, 2, 1, mode="max", impl="native")),
        (nn.AvgPool2d(3, 3), cnn.Pool2D(3, 3, mode="avg", impl="native")),
    ]
    for torch_layer, our_layer in pairs:
        a, b = summarize(torch_layer, x), summarize(our_layer, x)
        assert (a.flops, a.macs, a.lab_params) == (b.flops, b.macs, b.lab_params), our_layer
    # Spot values: 6x5x5 outputs x (4*9 + 1); avg pool 4x3x3 outputs.
    assert summarize(pairs[0][1], x).flops == 6 * 5 * 5 * 37
    assert summarize(pairs[3][1], x).flops == 4 * 3 * 3


def test_grouped_conv_rule():
    s = summarize(nn.Conv2d(4, 8, 3, groups=2), (1, 4, 5, 5))
    assert s.flops == 8 * 3 * 3 * (2 * 9 + 1)
    assert s.macs == 8 * 3 * 3 * 2 * 9
