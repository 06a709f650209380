"""Parameter and FLOPs accounting with the lab's conventions (`paddle.summary` / `paddle.flops`).

`summarize(model, input_size)` runs one forward pass with a hook on every leaf module and returns
a per-layer table (name, type, input shape, output shape, params, FLOPs) and the totals:

- trainable_params: parameters with requires_grad (what `model.parameters()` counts).
- buffer_values:    BatchNorm running mean and variance values (not `num_batches_tracked`).
- lab_params:       all parameters + those running statistics: `paddle.summary`'s "Total params"
                    (LeNet 61,706; ResNet18 11,185,034 = 11,175,434 + 9,600).
- flops:            FLOPs by the lab's rules below (LeNet 423,344; ResNet18 35,529,728).
- macs:             multiply-accumulates of convolutions and linear layers only.

The FLOPs rules are those of `paddle.flops` (paddle/hapi/dynamic_flops.py), written once in
`RULES`. A leaf module whose type has no rule is listed with flops=None and named in
`uncounted`, never silently counted as zero. cnnlab's own `Conv2D` / `Pool2D` follow the same
rules as torch's layers. No counting library reproduces the lab's figures (they differ on conv
and linear bias, BatchNorm, pooling and ReLU), hence this module.

A row's `params` follows the lab too: the module's own parameters plus its BN running statistics
(a BatchNorm2d(64) row shows 256), so the rows add up to lab_params. A module called twice (a
shared ReLU) gets a row per call, its params on the first only. A module with parameters that the
forward pass never calls (the shortcut of ResNet18 with use_residual=False) gets a row with no
shapes and 0 FLOPs, marked "not called".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from cnnlab import nn as cnn


# ---------------------------------------------------------------------------------------------
# The lab's FLOPs rules. Each takes (module, input tensor, output tensor) and returns an int.
# ---------------------------------------------------------------------------------------------

def _conv_flops(m, x, y):
    """Convolution: output elements x (C_in/groups * k_h * k_w), plus output elements if it has
    a bias (one add each). Multiply and add of a MAC count as one. paddle count_convNd."""
    k_h, k_w = m.weight.shape[2:]
    groups = getattr(m, "groups", 1)
    bias = 1 if m.bias is not None else 0
    return y.numel() * (x.shape[1] // groups * k_h * k_w + bias)


def _linear_flops(m, x, y):
    """Linear: in_features x output elements; the bias is not counted. paddle count_linear."""
    return m.in_features * y.numel()


def _batchnorm_flops(m, x, y):
    """BatchNorm: 2 x input elements (normalise, then scale and shift). paddle count_bn."""
    return 2 * x.numel()


def _avgpool_flops(m, x, y):
    """Average pooling: one op per output element. paddle count_avgpool."""
    return y.numel()


def _adaptive_avgpool_flops(m, x, y):
    """Adaptive average pooling: output elements x (window elements + 1), the window being
    input size // output size per spatial dim (adds, then one divide). paddle count_adap_avgpool."""
    window = math.prod(i // o for i, o in zip(x.shape[2:], y.shape[2:]))
    return y.numel() * (window + 1)


def _zero_flops(m, x, y):
    """ReLU, max pooling, flatten, identity, dropout: 0. The lab's tool counts ReLU and dropout
    as zero-op layers and has no rule for max pooling and flatten, which it treats as zero."""
    return 0


def _pool2d_flops(m, x, y):
    """cnnlab Pool2D: as torch's AvgPool2d when mode="avg", as MaxPool2d (0) when mode="max"."""
    return _avgpool_flops(m, x, y) if m.mode == "avg" else 0


def _conv_macs(m, x, y):
    """Convolution MACs: output elements x C_in/groups x k_h x k_w (bias not included)."""
    k_h, k_w = m.weight.shape[2:]
    return y.numel() * (x.shape[1] // getattr(m, "groups", 1) * k_h * k_w)


def _linear_macs(m, x, y):
    """Linear MACs: in_features x output elements (bias not included)."""
    return m.in_features * y.numel()


# (layer types, FLOPs rule, MACs rule or None for 0). First match wins.
RULES = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, cnn.Conv2D), _conv_flops, _conv_macs),
    ((nn.Linear,), _linear_flops, _linear_macs),
    ((nn.modules.batchnorm._BatchNorm,), _batchnorm_flops, None),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _avgpool_flops, None),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _adaptive_avgpool_flops,
     None),
    ((cnn.Pool2D,), _pool2d_flops, None),
    ((nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten,
      nn.Identity, nn.Dropout), _zero_flops, None),
]


def find_rule(module):
    """(flops_rule, macs_rule) for a module, or None when no rule covers its type."""
    for types, flops, macs in RULES:
        if isinstance(module, types):
            return flops, macs
    return None


# ---------------------------------------------------------------------------------------------
# Parameter totals
# ---------------------------------------------------------------------------------------------

def _running_stats(module, recurse=True):
    """BN running mean/var values of a module (and its children when recurse)."""
    modules = module.modules() if recurse else [module]
    total = 0
    for m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            total += m.running_mean.numel() + m.running_var.numel()
    return total


def count_params(model: nn.Module) -> dict:
    """{"trainable_params", "buffer_values", "lab_params"} of a model (see the module docstring)."""
    all_params = sum(p.numel() for p in model.parameters())
    buffers = _running_stats(model)
    return {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "buffer_values": buffers,
        "lab_params": all_params + buffers,
    }


# ---------------------------------------------------------------------------------------------
# Per-layer table
# ---------------------------------------------------------------------------------------------

@dataclass
class LayerRow:
    name: str
    type: str
    input_shape: list[int] | None
    output_shape: list[int] | None
    params: int            # own parameters + BN running stats (the lab's per-layer count)
    flops: int | None      # None: no rule for this layer type (see `uncounted`)
    macs: int = 0
    note: str = ""


@dataclass
class Summary:
    model: str
    input_size: list[int]
    layers: list[LayerRow]
    trainable_params: int
    buffer_values: int
    lab_params: int
    flops: int
    macs: int
    uncounted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _shape(t):
    return list(t.shape) if isinstance(t, torch.Tensor) else None


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _own_params(module):
    return sum(p.numel() for p in module.parameters(recurse=False)) + _running_stats(module, False)


def summarize(model: nn.Module, input_size, name: str | None = None) -> Summary:
    """Run `model` once on zeros of `input_size` ([B,C,H,W]) and count every leaf layer.

    Runs in eval mode without gradients (BatchNorm on a 1x1 map of one image cannot run in train
    mode, and the running statistics must not move); the model's mode is restored afterwards.
    """
    # Leaf modules; a model that is itself a single layer is its own leaf, named by its type.
    leaves = [(n or type(m).__name__, m) for n, m in model.named_modules()
              if not any(m.children())]
    rows: list[LayerRow] = []
    seen: set[int] = set()

    def hook_for(layer_name):
        def hook(module, inputs, output):
            x, y = _first_tensor(inputs), _first_tensor(output)
            rule = find_rule(module)
            flops = macs = None
            if rule is not None and x is not None and y is not None:
                flops = int(rule[0](module, x, y))
                macs = int(rule[1](module, x, y)) if rule[1] else 0
            params = 0 if id(module) in seen else _own_params(module)
            seen.add(id(module))
            rows.append(LayerRow(layer_name, type(module).__name__, _shape(x), _shape(y), params,
                                 flops, macs or 0, "" if flops is not None else "uncounted"))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    for layer_name, m in leaves:
        if id(m) not in seen and _own_params(m):
            rows.append(LayerRow(layer_name, type(m).__name__, None, None, _own_params(m), 0, 0,
                                 "not called"))

    totals = count_params(model)
    return Summary(
        model=name or type(model).__name__,
        input_size=list(input_size),
        layers=rows,
        flops=sum(r.flops for r in rows if r.flops is not None),
        macs=sum(r.macs for r in rows),
        uncounted=[f"{r.name} ({r.type})" for r in rows if r.flops is None],
        **totals,
    )
