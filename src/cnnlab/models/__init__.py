"""The lab's models by name: `build_model(name, in_channels=None, num_classes=10, **kwargs)`.

| name            | model                                                       | kwargs               |
|-----------------|-------------------------------------------------------------|----------------------|
| lenet           | LeNet-5 on cnnlab's operators (lab 5.3.2)                   | conv_impl="fast"     |
| lenet-native    | the same LeNet-5 on torch layers (the lab's Paddle_LeNet)   | -                    |
| resnet18        | the lab's ResNet18, use_residual=True (lab 5.4.1)           | stem_bias, conv_impl |
| resnet18-plain  | the same, use_residual=False (lab 5.4.2)                    | stem_bias, conv_impl |
| resnet18-vision | part 2's library ResNet18 (paddle.vision = torchvision's)   | stem_bias, conv_impl |
| resnet18-cifar  | ResNet18, 3x3 stride-1 stem, no max-pool (the fast recipe)  | stem_bias, conv_impl |

`in_channels` defaults to 1 (the lab's MNIST images), except for the part-2 models
`resnet18-vision` and `resnet18-cifar`, whose default is 3 (RGB). ResNet kwargs: `stem_bias`
(True for the lab's own ResNet18, whose stem conv has a bias; False for the part-2 models, as
torchvision and the CIFAR recipes: a bias before BatchNorm is cancelled by its mean),
`conv_impl="native"` ("fast"/"reference": cnnlab's Conv2D/Pool2D).
A wrong name or kwarg raises `cnnlab.errors.UserError`.
"""

from __future__ import annotations

from torch import nn

from cnnlab.errors import UserError
from cnnlab.models.lenet import LeNet, NativeLeNet
from cnnlab.models.resnet import (ResBlock, ResNet18, resnet18, resnet18_cifar, resnet18_plain,
                                  resnet18_vision)

CONV_IMPLS = ("fast", "reference", "native")

# name -> (builder, default in_channels, allowed kwargs with their defaults)
_REGISTRY = {
    "lenet": (LeNet, 1, {"conv_impl": "fast"}),
    "lenet-native": (NativeLeNet, 1, {}),
    "resnet18": (resnet18, 1, {"stem_bias": True, "conv_impl": "native"}),
    "resnet18-plain": (resnet18_plain, 1, {"stem_bias": True, "conv_impl": "native"}),
    "resnet18-vision": (resnet18_vision, 3, {"stem_bias": False, "conv_impl": "native"}),
    "resnet18-cifar": (resnet18_cifar, 3, {"stem_bias": False, "conv_impl": "native"}),
}

MODEL_NAMES = tuple(_REGISTRY)

__all__ = ["MODEL_NAMES", "build_model", "full_kwargs", "default_input_size", "LeNet",
           "NativeLeNet", "ResBlock", "ResNet18"]


def _check_name(name):
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def default_in_channels(name: str) -> int:
    """Input channels a model is built with when `in_channels` is not given."""
    _check_name(name)
    return _REGISTRY[name][1]


def default_input_size(name: str) -> tuple[int, int, int, int]:
    """The lab's input for a model: one 32x32 image, 1 channel (3 for the part-2 models)."""
    return (1, default_in_channels(name), 32, 32)


def full_kwargs(name: str, in_channels: int | None = None, num_classes: int = 10,
                **kwargs) -> dict:
    """Every argument `build_model(name, ...)` builds with, defaults filled in:
    {"in_channels", "num_classes", **the model's kwargs}. Stored in checkpoints, so that a
    later change of a builder default cannot change what an old checkpoint rebuilds."""
    _check_name(name)
    _, default_channels, allowed = _REGISTRY[name]
    return {"in_channels": default_channels if in_channels is None else in_channels,
            "num_classes": num_classes, **allowed, **kwargs}


def build_model(name: str, in_channels: int | None = None, num_classes: int = 10,
                **kwargs) -> nn.Module:
    """Build model `name` (see MODEL_NAMES) -> an nn.Module mapping [B,C,32,32] to [B,num_classes]."""
    _check_name(name)
    builder, default_channels, allowed = _REGISTRY[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise UserError(f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
                        f"accepted: {accepted}")
    if in_channels is None:
        in_channels = default_channels
    for arg, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model {name!r}: {arg} must be a positive integer, got {value!r}")
    if "conv_impl" in kwargs and kwargs["conv_impl"] not in CONV_IMPLS:
        raise UserError(f"model {name!r}: conv_impl must be one of {', '.join(CONV_IMPLS)}, "
                        f"got {kwargs['conv_impl']!r}")
    if "stem_bias" in kwargs and not isinstance(kwargs["stem_bias"], bool):
        raise UserError(f"model {name!r}: stem_bias must be True or False, "
                        f"got {kwargs['stem_bias']!r}")
    return builder(in_channels=in_channels, num_classes=num_classes, **{**allowed, **kwargs})
