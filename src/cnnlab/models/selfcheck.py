"""Equivalence checks of the models, run by `cnnlab check`.

- LeNet on cnnlab's operators ("fast" and "reference") vs LeNet on torch layers, with the same
  weights moved by a strict `load_state_dict`: outputs, and (fast) the gradients of all
  parameters and of the input.
- Our ResNet18 vs torchvision's `resnet18`, done right where the lab's check was vacuous (its key
  typo left the shortcut BN unloaded, it ran in train mode on a 1x1 map and printed max(diff)):
  stem_bias=False, 3 channels, 1000 classes; strict loading in both directions; eval mode; random
  non-default BN running statistics and affine parameters; a batch of 2 at 64x64 (so the last
  stage sees 2x2 maps and the average pool averages); the largest absolute difference.
- The part-2 models the same way: `resnet18-vision` vs `resnet18(num_classes=10)`, and
  `resnet18-cifar` vs that with a 3x3/1 stem conv (no bias) and no max-pool, at 16x16.

Everything runs in float64, so a correct implementation differs only by rounding (~1e-15
relative); the tolerance is 1e-9 relative to the largest reference value, far below any bug.
"""

from __future__ import annotations

import torch
from torch import nn

TOLERANCE = 1e-9  # relative to max(1, largest |reference value|)


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-default running statistics and affine parameters (in place).

    With the defaults (mean 0, var 1, weight 1, bias 0) a BN layer in eval mode is nearly the
    identity, so a BN left unloaded would go unnoticed.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=generator))
                m.weight.copy_(0.5 + torch.rand(c, generator=generator))
                m.bias.copy_(0.2 * torch.randn(c, generator=generator))
    return model


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| (not max(a - b), which a negative difference hides)."""
    return (a.detach() - b.detach()).abs().max().item()


def _result(name, diff, reference):
    tol = TOLERANCE * max(1.0, reference.detach().abs().max().item())
    return {"name": name, "max_abs_diff": diff, "tolerance": tol, "passed": bool(diff <= tol)}


def _error(name, err):
    return {"name": name, "max_abs_diff": None, "tolerance": None, "passed": False,
            "error": f"{type(err).__name__}: {err}"}


def _output_and_grads(model, x):
    """Output, and the gradients of sum(output**2) w.r.t. the input and every parameter."""
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    out = model(x)
    (out ** 2).sum().backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return out.detach(), torch.cat([g.flatten() for g in grads])


def check_lenet(conv_impl: str, batch: int = 4, grads: bool = True, seed: int = 0) -> list[dict]:
    """LeNet(conv_impl) with LeNet-native's weights (strict load) vs LeNet-native.

    grads=False compares outputs only: backpropagating through the reference loops takes ~8 s,
    and the operator checks already compare the reference gradients with torch's.
    """
    from cnnlab.models import build_model

    name = f"lenet[{conv_impl}] vs lenet-native"
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        native = build_model("lenet-native").double()
        ours = build_model("lenet", conv_impl=conv_impl).double()
    ours.load_state_dict(native.state_dict())  # strict: names and shapes must agree
    x = torch.randn(batch, 1, 32, 32, generator=g, dtype=torch.float64)
    names = [f"{name}: output"] + ([f"{name}: gradients"] if grads else [])
    try:
        if grads:
            out_ref, grad_ref = _output_and_grads(native, x)
            out, grad = _output_and_grads(ours, x)
        else:
            with torch.no_grad():
                out_ref, out = native(x), ours(x)
    except Exception as err:  # an operator missing or broken: report it, keep checking
        return [_error(n, err) for n in names]
    results = [_result(names[0], max_abs_diff(out, out_ref), out_ref)]
    if grads:
        results.append(_result(names[1], max_abs_diff(grad, grad_ref), grad_ref))
    return results


# model -> (our build_model kwargs, torchvision's num_classes, CIFAR stem, input size)
_TWINS = {
    "resnet18": ({"in_channels": 3, "num_classes": 1000, "stem_bias": False}, 1000, False, 64),
    "resnet18-vision": ({}, 10, False, 64),
    "resnet18-cifar": ({}, 10, True, 16),
}


def _resnet_pair(conv_impl, seed, model="resnet18"):
    """(ours, torchvision's twin) in float64 eval mode; the CIFAR twin is torchvision's resnet18
    with a 3x3/1 stem conv without bias and no max-pool (as Lightning's CIFAR baseline)."""
    import torchvision

    from cnnlab.models import build_model

    kwargs, classes, cifar_stem, _ = _TWINS[model]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = torchvision.models.resnet18(weights=None, num_classes=classes)
        if cifar_stem:
            theirs.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            theirs.maxpool = nn.Identity()
        ours = build_model(model, conv_impl=conv_impl, **kwargs)
    return ours.double().eval(), theirs.double().eval()


def check_resnet18(conv_impl: str = "native", reverse: bool = False, batch: int = 2,
                   size: int | None = None, seed: int = 0, model: str = "resnet18") -> dict:
    """Our ResNet18 (`model`: resnet18, resnet18-vision or resnet18-cifar) vs torchvision's with
    the same weights; `size` defaults to 64 for the 7x7 stems and 16 for the CIFAR stem, the
    smallest inputs whose last stage has 2x2 maps (so the average pool averages).

    reverse=False: torchvision's weights (BN randomised) loaded into ours; reverse=True: ours
    (BN randomised) loaded into torchvision's. Both loads are strict.
    """
    direction = "ours->torchvision" if reverse else "torchvision->ours"
    twin = "resnet18 (3x3 stem, no max-pool)" if model == "resnet18-cifar" else "resnet18"
    name = f"{model}[{conv_impl}] vs torchvision {twin}, weights {direction}"
    size = size or _TWINS.get(model, (None, None, None, 64))[3]
    try:
        ours, theirs = _resnet_pair(conv_impl, seed, model)
        g = torch.Generator().manual_seed(seed + 1)
        source, target = (ours, theirs) if reverse else (theirs, ours)
        randomize_batchnorm(source, g)
        target.load_state_dict(source.state_dict())  # strict
        x = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64)
        with torch.no_grad():
            ref = theirs(x)
            out = ours(x)
    except Exception as err:
        return _error(name, err)
    return _result(name, max_abs_diff(out, ref), ref)


def run_model_checks() -> list[dict]:
    """All model checks: [{"name", "max_abs_diff", "tolerance", "passed"} (+ "error")]."""
    checks = []
    checks += check_lenet("fast")
    checks += check_lenet("reference", batch=2, grads=False)
    checks.append(check_resnet18("native"))
    checks.append(check_resnet18("native", reverse=True))
    checks.append(check_resnet18("fast"))
    for model in ("resnet18-vision", "resnet18-cifar"):
        checks.append(check_resnet18("native", model=model))
        checks.append(check_resnet18("native", reverse=True, model=model))
    return checks
