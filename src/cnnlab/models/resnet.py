"""ResNet18 as the lab builds it (NNDL section 5.4.1), with torchvision's parameter names.

Structure (lab): stem conv 7x7/2 pad 3 -> 64 (with bias, as the lab's `make_first_module`), BN,
ReLU, max-pool 3x3/2 pad 1; four stages of two `ResBlock`s (64, 128, 256, 512 channels; stages
2-4 halve the size); adaptive average pool to 1x1, flatten, linear 512 -> num_classes.
Each size: M' = (M + 2P - U) // S + 1, e.g. 1x32x32 -> 64x16x16 -> 64x8x8 -> ... -> 512x1x1.

Names follow torchvision (`conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc`), not the lab's
(`net.0.0, net.2.0.shortcut, net.2.0.bn3, net.7`), so with `stem_bias=False, in_channels=3,
num_classes=1000` a torchvision `resnet18()` state dict loads strictly, and back. The part-2
builders: `resnet18_vision` is exactly that layout (3 channels, 10 classes); `resnet18_cifar`
is torchvision's resnet18 with a 3x3/1 stem conv (no bias) and the max-pool removed.

`conv_impl="native"` uses torch layers; "fast" or "reference" put `cnnlab.nn.Conv2D` / `Pool2D` in
place of every convolution and the max-pool (same parameter names). BatchNorm, adaptive pooling and
the linear layer are always torch's.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab import nn as cnn


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False, impl="native"):
    if impl == "native":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
    return cnn.Conv2D(in_channels, out_channels, kernel_size, stride, padding, bias=bias, impl=impl)


def _max_pool(kernel_size, stride, padding, impl="native"):
    if impl == "native":
        return nn.MaxPool2d(kernel_size, stride, padding)
    return cnn.Pool2D(kernel_size, stride, padding, mode="max", impl=impl)


class ResBlock(nn.Module):
    """The lab's residual unit (torchvision's BasicBlock): [B,C_in,M,N] -> [B,C_out,M',N'].

    conv3x3/stride -> BN -> ReLU -> conv3x3 -> BN, (+ shortcut), ReLU.
    When the shape changes (stride != 1 or C_in != C_out) the shortcut is a 1x1 conv (stride s, no
    bias) + BN, named `downsample.0` / `downsample.1` as in torchvision. With use_residual=False the
    shortcut is skipped, but its layers are still created, as in the lab: they are counted in the
    parameters (11,185,034) and stay loadable, only unused.
    """

    def __init__(self, in_channels, out_channels, stride=1, use_residual=True, impl="native"):
        super().__init__()
        self.use_residual = use_residual
        self.conv1 = _conv(in_channels, out_channels, 3, stride, 1, impl=impl)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv(out_channels, out_channels, 3, 1, 1, impl=impl)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                _conv(in_channels, out_channels, 1, stride, 0, impl=impl),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.use_residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        out = self.relu(out)

        return out


class ResNet18(nn.Module):
    """ResNet18: [B,in_channels,H,W] -> [B,num_classes].

    stem="lab": 7x7/2 conv + 3x3/2 max-pool (the lab, and torchvision); stem="cifar": 3x3/1 conv and
    no max-pool (`maxpool` is an Identity), which keeps 32x32 inputs from shrinking to 8x8 at once.
    """

    def __init__(self, in_channels=1, num_classes=10, use_residual=True, stem_bias=True,
                 conv_impl="native", stem="lab"):
        super().__init__()
        if stem not in ("lab", "cifar"):
            raise ValueError(f"ResNet18: stem must be 'lab' or 'cifar', got {stem!r}")
        if stem == "lab":
            self.conv1 = _conv(in_channels, 64, 7, 2, 3, bias=stem_bias, impl=conv_impl)
        else:
            self.conv1 = _conv(in_channels, 64, 3, 1, 1, bias=stem_bias, impl=conv_impl)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        if stem == "lab":
            self.maxpool = _max_pool(3, 2, 1, impl=conv_impl)
        else:
            self.maxpool = nn.Identity()
        self.layer1 = _stage(64, 64, 1, use_residual, conv_impl)
        self.layer2 = _stage(64, 128, 2, use_residual, conv_impl)
        self.layer3 = _stage(128, 256, 2, use_residual, conv_impl)
        self.layer4 = _stage(256, 512, 2, use_residual, conv_impl)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


def _stage(in_channels, out_channels, stride, use_residual, impl, blocks=2):
    """One stage: the first block may change channels/stride, the others keep the shape."""
    layers = [ResBlock(in_channels, out_channels, stride, use_residual, impl)]
    for _ in range(1, blocks):
        layers.append(ResBlock(out_channels, out_channels, 1, use_residual, impl))
    return nn.Sequential(*layers)


def _init_weights(model):
    # torchvision's initialisation, applied to torch and cnnlab convs alike so that the native and
    # fast variants start from the same weights under the same seed.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, cnn.Conv2D)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18(in_channels=1, num_classes=10, stem_bias=True, conv_impl="native"):
    """The lab's ResNet18 with residual connections (Model_ResNet18(use_residual=True))."""
    return ResNet18(in_channels, num_classes, True, stem_bias, conv_impl)


def resnet18_plain(in_channels=1, num_classes=10, stem_bias=True, conv_impl="native"):
    """The lab's ResNet18 without residual connections (Model_ResNet18(use_residual=False))."""
    return ResNet18(in_channels, num_classes, False, stem_bias, conv_impl)


def resnet18_vision(in_channels=3, num_classes=10, stem_bias=False, conv_impl="native"):
    """The library ResNet18 of the lab's part 2 (`paddle.vision.models.resnet18`, torchvision's
    `resnet18`): 7x7/2 stem conv without bias, max-pool; 3x32x32 -> 64x16x16 -> 64x8x8 -> ...
    -> 512x1x1. The notebook forgot num_classes=10 and trained a 1000-way head; 10 here."""
    return ResNet18(in_channels, num_classes, True, stem_bias, conv_impl)


def resnet18_cifar(in_channels=3, num_classes=10, stem_bias=False, conv_impl="native"):
    """ResNet18 with the CIFAR stem: 3x3 stride-1 conv without bias, no max-pool, so 32x32
    inputs keep their size through layer1: 3x32x32 -> 64x32x32 -> ... -> 512x4x4 (the
    fast recipes' ResNet18: kuangliu/pytorch-cifar, Lightning's baseline; 11,173,962 params)."""
    return ResNet18(in_channels, num_classes, True, stem_bias, conv_impl, stem="cifar")
