"""The lab's weight initialisation: what PaddlePaddle gives the lab's layers by default.

The models are built with PyTorch's default initialisation (`cnnlab.models`); the lab's
Paddle code starts from other weights, and with its few steps (80 at lr 0.1 for LeNet) the start
decides much of the result:

| lab model (seed text)                 | layers                            | Paddle default                        |
|---------------------------------------|-----------------------------------|---------------------------------------|
| Model_LeNet (`lenet`, 5.3.2)          | its own Conv2D: `create_parameter` | Xavier uniform weights, zero biases   |
|                                       | nn.Linear                         | Xavier uniform weights, zero biases   |
| Paddle_LeNet (`lenet-native`),        | nn.Conv2D                         | Normal(0, sqrt(2 / (k*k*C_in))), zero bias |
| Model_ResNet18 (`resnet18[-plain]`),  | nn.BatchNorm2D                    | weight 1, bias 0                      |
| paddle.vision ResNet18 (part 2)       | nn.Linear                         | Xavier uniform weights, zero biases   |

Measured on the bundled lab split with the lab's settings (test accuracy; LeNet on torch layers,
seeds 100, 1, 2, 3): PyTorch's defaults 0.15 / 0.38 / 0.38 / 0.57 (80 steps at lr 0.1 barely leave
chance), Model_LeNet's Xavier init 0.82 / 0.86 / 0.87 / 0.87. ResNet18 without residual
connections, seed 100: 0.76 with torchvision's initialisation, 0.83 with Paddle's.
"""

from __future__ import annotations

from torch import nn

WEIGHT_INITS = ("lab", "torch")


def _is_conv(m) -> bool:
    from cnnlab import nn as cnn

    return isinstance(m, (nn.Conv2d, cnn.Conv2D))


def lab_init_(model: nn.Module, model_name: str) -> nn.Module:
    """Re-initialise `model` in place as Paddle initialises the lab's `model_name`; returns it."""
    xavier_convs = model_name == "lenet"  # Model_LeNet's Conv2D uses create_parameter's default
    for m in model.modules():
        if _is_conv(m):
            if xavier_convs:
                nn.init.xavier_uniform_(m.weight)
            else:  # paddle.nn.Conv2D: Normal(0, (2 / filter_elem_num) ** 0.5), fan-in based
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
