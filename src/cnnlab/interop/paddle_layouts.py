"""Paddle parameter names and layouts of the lab's models, mapped to cnnlab's.

Three layouts (what a `.pdparams` file was saved from):

- `lab`: the lab's own classes. `Model_LeNet` (custom `Conv2D`, bias `[P, 1]`; names `conv1, conv3,
  conv5, linear6, linear7`) or `Model_ResNet18` (`net.0.0` stem conv with bias, `net.0.1` BN,
  `net.1`..`net.4` stages of `ResBlock`s with `conv1, conv2, bn1, bn2` and, where the shape changes,
  `shortcut` + `bn3`; `net.7` linear).
- `paddle-lenet`: the lab's `Paddle_LeNet` (same names as `Model_LeNet`, `paddle.nn` layers, bias `[P]`).
- `paddle-vision`: `paddle.vision.models.resnet18` (`conv1` without bias, `bn1`,
  `layerX.Y.{conv1,bn1,conv2,bn2}`, `layerX.0.downsample.{0,1}`, `fc`): cnnlab's
  `resnet18-vision`; `resnet18-cifar` uses the same names (a paddle.vision ResNet18 whose
  `conv1` is a 3x3/1 conv and whose `maxpool` is removed: the shapes are checked, not assumed).
  The lab's own Model_ResNet18 hard-codes the 7x7 stem and max-pool, so a `lab`-layout file of
  `resnet18-cifar` (stem_bias=True) holds the lab's names with a [64, 3, 3, 3] stem.

Rules shared by all: Paddle's `Linear.weight` is `[in, out]` (PyTorch `[out, in]`); BatchNorm's running
statistics are `_mean` / `_variance` (PyTorch `running_mean` / `running_var`); PyTorch's
`num_batches_tracked` has no Paddle counterpart (import leaves the model's value, export drops it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import UserError

LAYOUT_NAMES = ("lab", "paddle-lenet", "paddle-vision")

# layout -> family -> what a file in that layout was saved from
DESCRIPTIONS = {
    "lab": {
        "lenet": "the lab's Model_LeNet (custom Conv2D, bias [P,1])",
        "resnet": "the lab's Model_ResNet18 (net.0.0 ... net.7)",
    },
    "paddle-lenet": {"lenet": "the lab's Paddle_LeNet (paddle.nn layers, bias [P])"},
    "paddle-vision": {"resnet": "paddle.vision.models.resnet18 (stem conv without bias)"},
}

_BN_STATS = {"running_mean": "_mean", "running_var": "_variance", "num_batches_tracked": None}

# Our ResNet module path -> the lab's Model_ResNet18 path.
_RESNET_LAB = [
    (re.compile(r"^conv1$"), "net.0.0"),
    (re.compile(r"^bn1$"), "net.0.1"),
    (re.compile(r"^fc$"), "net.7"),
    (re.compile(r"^layer(\d)\.(\d+)\.(conv1|conv2|bn1|bn2)$"), r"net.\1.\2.\3"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0$"), r"net.\1.\2.shortcut"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1$"), r"net.\1.\2.bn3"),
]


@dataclass(frozen=True)
class Entry:
    """One tensor: our state-dict key, its key in the Paddle file, and how its layout differs.

    rule: "same" (identical array), "transpose" (Linear weight: ours [out,in], Paddle [in,out]) or
    "column" (custom-Conv2D bias: ours [P], Paddle [P,1])."""

    ours: str
    paddle: str
    rule: str
    shape: tuple  # ours

    @property
    def paddle_shape(self) -> tuple:
        if self.rule == "transpose":
            return tuple(reversed(self.shape))
        if self.rule == "column":
            return (*self.shape, 1)
        return self.shape


def model_family(model: nn.Module) -> str:
    """"lenet" or "resnet", from the model's parameter names; UserError for any other model."""
    keys = set(model.state_dict())
    if {"conv1.weight", "conv3.weight", "conv5.weight", "linear7.weight"} <= keys:
        return "lenet"
    if {"conv1.weight", "layer1.0.conv1.weight", "fc.weight"} <= keys:
        return "resnet"
    raise UserError(
        f"{type(model).__name__} has no Paddle counterpart: expected the parameters of LeNet "
        "(conv1, conv3, conv5, linear6, linear7) or ResNet18 (conv1, bn1, layer1..4, fc)"
    )


def layouts_for(family: str) -> tuple[str, ...]:
    return tuple(name for name in LAYOUT_NAMES if family in DESCRIPTIONS[name])


def describe(layout: str, family: str) -> str:
    return DESCRIPTIONS[layout][family]


def default_layout(model: nn.Module) -> str:
    """The layout the lab would have saved this model in.

    LeNet with cnnlab's own conv layers -> `lab` (Model_LeNet); with torch's -> `paddle-lenet`
    (Paddle_LeNet). ResNet18 with a stem bias -> `lab` (Model_ResNet18); without -> `paddle-vision`."""
    family = model_family(model)
    if family == "lenet":
        return "paddle-lenet" if isinstance(_module(model, "conv1"), nn.Conv2d) else "lab"
    return "lab" if "conv1.bias" in model.state_dict() else "paddle-vision"


def _module(model, path):
    return model.get_submodule(path)


def _rename_module(family: str, layout: str, path: str) -> str:
    if family == "lenet" or layout == "paddle-vision":
        return path  # Model_LeNet, Paddle_LeNet and paddle.vision use our names already
    for pattern, repl in _RESNET_LAB:
        if pattern.match(path):
            return pattern.sub(repl, path)
    raise UserError(f"layer {path!r} of this ResNet has no place in the lab's Model_ResNet18")


def plan(model: nn.Module, layout: str) -> list[Entry]:
    """Every tensor of `model` that a Paddle file in `layout` holds, in our state-dict order."""
    family = model_family(model)
    if layout not in LAYOUT_NAMES:
        raise UserError(f"unknown Paddle layout {layout!r}: expected one of {', '.join(LAYOUT_NAMES)}")
    if family not in DESCRIPTIONS[layout]:
        raise UserError(
            f"layout {layout!r} is for {'ResNet18' if family == 'lenet' else 'LeNet'}, not "
            f"{'LeNet' if family == 'lenet' else 'ResNet18'}: use one of {', '.join(layouts_for(family))}"
        )
    entries = []
    for key, value in model.state_dict().items():
        path, _, attr = key.rpartition(".")
        module = _module(model, path)
        rule = "same"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and attr in _BN_STATS:
            attr = _BN_STATS[attr]
            if attr is None:
                continue  # num_batches_tracked: Paddle does not keep it
        elif isinstance(module, nn.Linear) and attr == "weight":
            rule = "transpose"
        elif attr == "bias" and family == "lenet" and layout == "lab" and value.dim() == 1 \
                and getattr(module, "weight", None) is not None and module.weight.dim() == 4:
            rule = "column"  # the lab's custom Conv2D creates its bias as [out_channels, 1]
        name = f"{_rename_module(family, layout, path)}.{attr}"
        entries.append(Entry(key, name, rule, tuple(value.shape)))
    return entries


def to_ours(array: torch.Tensor, rule: str) -> torch.Tensor:
    """A tensor from the Paddle file in our layout."""
    if rule == "transpose":
        return array.t()
    if rule == "column":
        return array.reshape(array.shape[0])
    return array


def to_paddle(tensor: torch.Tensor, rule: str) -> torch.Tensor:
    """One of our tensors in the Paddle layout."""
    if rule == "transpose":
        return tensor.t()
    if rule == "column":
        return tensor.reshape(-1, 1)
    return tensor


def guess_source(keys) -> tuple[str, str] | None:
    """(family, what it was probably saved from) for a file with these keys, or None."""
    keys = set(keys)
    if "net.0.0.weight" in keys and "net.7.weight" in keys:
        return "resnet", "the lab's Model_ResNet18: use --model resnet18 or resnet18-plain"
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys:
        return "resnet", ("a paddle.vision ResNet18: use --model resnet18-vision (7x7 stem) or "
                          "resnet18-cifar (3x3 stem)")
    if "conv5.weight" in keys and "linear7.weight" in keys:
        return "lenet", "the lab's LeNet: use --model lenet or lenet-native"
    return None


def infer_model_kwargs(model_name: str, keys_shapes: dict) -> dict:
    """`build_model` kwargs read off a Paddle state dict: in_channels, num_classes, stem_bias.

    `keys_shapes` maps Paddle keys to shapes. Only what the file shows is returned."""
    kwargs = {}
    for stem in ("net.0.0.weight", "conv1.weight"):
        if stem in keys_shapes and len(keys_shapes[stem]) == 4:
            kwargs["in_channels"] = int(keys_shapes[stem][1])
            break
    for head in ("net.7.weight", "fc.weight", "linear7.weight"):
        if head in keys_shapes and len(keys_shapes[head]) == 2:
            kwargs["num_classes"] = int(keys_shapes[head][1])  # Paddle Linear: [in, out]
            break
    if model_name.startswith("resnet") and ("net.0.0.weight" in keys_shapes or "conv1.weight" in keys_shapes):
        kwargs["stem_bias"] = "net.0.0.bias" in keys_shapes or "conv1.bias" in keys_shapes
    return kwargs
