"""LeNet-5 exactly as the lab builds it (NNDL section 5.3.2).

    input [B,1,32,32]
    conv1   5x5 -> 6,   ReLU      [B,6,28,28]
    pool2   max 2x2/2             [B,6,14,14]
    conv3   5x5 -> 16,  ReLU      [B,16,10,10]
    pool4   avg 2x2/2             [B,16,5,5]
    conv5   5x5 -> 120, ReLU      [B,120,1,1]
    flatten                       [B,120]
    linear6 120 -> 84,  ReLU      [B,84]
    linear7 84 -> num_classes     [B,num_classes]

Each conv: M' = (M + 2P - U) // S + 1 with P=0, S=1, U=5.
The layer names are the lab's (conv1, pool2, conv3, pool4, conv5, linear6, linear7); the ReLUs are
functional calls in `forward`, as in the lab, so the module list is the lab's seven layers.

`LeNet` uses cnnlab's own layers (`cnnlab.nn.Conv2D` / `Pool2D`, implementation `conv_impl`);
`NativeLeNet` uses torch's. Both have the same parameter names and shapes (bias [P], not the lab's
[P,1]), so a state dict moves between them with a strict `load_state_dict`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import nn as cnn


class LeNet(nn.Module):
    """LeNet-5 built on cnnlab's operators; conv_impl is "fast", "reference" or "native"."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, conv_impl: str = "fast"):
        super().__init__()
        self.conv1 = cnn.Conv2D(in_channels, 6, kernel_size=5, impl=conv_impl)
        self.pool2 = cnn.Pool2D(kernel_size=2, stride=2, mode="max", impl=conv_impl)
        self.conv3 = cnn.Conv2D(6, 16, kernel_size=5, impl=conv_impl)
        self.pool4 = cnn.Pool2D(kernel_size=2, stride=2, mode="avg", impl=conv_impl)
        self.conv5 = cnn.Conv2D(16, 120, kernel_size=5, impl=conv_impl)
        self.linear6 = nn.Linear(120, 84)
        self.linear7 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.pool2(x)
        x = F.relu(self.conv3(x))
        x = self.pool4(x)
        x = F.relu(self.conv5(x))
        x = torch.flatten(x, 1)  # [B,120,1,1] -> [B,120]
        x = F.relu(self.linear6(x))
        x = self.linear7(x)
        return x


class NativeLeNet(nn.Module):
    """The same LeNet-5 on torch.nn layers (the lab's Paddle_LeNet)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool4 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv5 = nn.Conv2d(16, 120, kernel_size=5)
        self.linear6 = nn.Linear(120, 84)
        self.linear7 = nn.Linear(84, num_classes)

    forward = LeNet.forward  # the same seven steps; only the layer classes differ
