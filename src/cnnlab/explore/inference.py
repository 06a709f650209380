"""One loaded checkpoint as the page sees it: prediction, every layer's output, formula 5.13.

`Explorer(key, model, payload)` registers forward hooks once on the model's layers (conv, batch
norm, activation, pooling, linear, residual block) and records their outputs during `predict`.
LeNet's ReLUs are functional calls in its `forward` (as in the lab), so no module sees them: they
are added after the layers listed in `FUNCTIONAL_RELU` as `relu(output)`, which is exactly what the
model computes next (tested against the next layer's input).

Feature maps travel quantised (`encode`): one byte per value between the layer's min and max,
base64, with the two bounds; exact numbers come with a clicked pixel (`formula`).
All inference runs under one process-wide lock (one worker; torch uses the machine's threads).
"""

from __future__ import annotations

import base64
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import nn as cnn
from cnnlab.explore.formula import conv_formula
from cnnlab.explore.inputs import input_spec
from cnnlab.ops.edges import laplacian_edges

INFERENCE_LOCK = threading.Lock()

# model class -> layers whose output the model's forward passes through F.relu
FUNCTIONAL_RELU = {
    "LeNet": ("conv1", "conv3", "conv5", "linear6"),
    "NativeLeNet": ("conv1", "conv3", "conv5", "linear6"),
}
CONV_TYPES = (nn.Conv2d, cnn.Conv2D)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, cnn.Pool2D)
_SKIP = (nn.Identity, nn.Flatten, nn.Dropout)


def layer_kind(module: nn.Module) -> str | None:
    """conv | bn | act | pool | linear | block | other, or None for modules not shown."""
    if isinstance(module, CONV_TYPES):
        return "conv"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(module, _ACTIVATIONS):
        return "act"
    if isinstance(module, _POOLS):
        return "pool"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _SKIP):
        return None
    if not any(module.children()):
        return "other"
    # residual units: ours (ResBlock) and torchvision's (BasicBlock, Bottleneck)
    if type(module).__name__ in ("ResBlock", "BasicBlock", "Bottleneck"):
        return "block"
    return None


def encode(t: torch.Tensor, symmetric: bool = False) -> dict:
    """Tensor -> {"lo", "hi", "q"}: q = base64 of uint8 round((t - lo) / (hi - lo) * 255), C order.

    symmetric: lo = -hi = -max|t| (kernels, so that 0 is the middle grey)."""
    a = np.nan_to_num(t.detach().float().cpu().numpy(), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if symmetric:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    q = np.clip(np.rint((a - lo) * scale), 0, 255).astype(np.uint8)
    return {"lo": lo, "hi": hi, "q": base64.b64encode(q.tobytes()).decode("ascii")}


def _round(values, digits=6) -> list:
    return [round(float(v), digits) for v in values]


class Explorer:
    """A model with its input preparation and layer hooks, ready to answer the page."""

    def __init__(self, key: str, model: nn.Module, payload: dict, source: str = ""):
        self.key = key
        self.model = model.eval()
        self.arch = (payload.get("model") or {}).get("name") or type(model).__name__
        self.source = source
        self.spec = input_spec(payload, model)
        self.config = payload.get("config") or {}
        self.convs = {name: m for name, m in model.named_modules() if isinstance(m, CONV_TYPES)}
        self._relu_after = set(FUNCTIONAL_RELU.get(type(model).__name__, ()))
        self._record = None   # list of (name, kind, output) while predict() runs
        self._seen = set()
        for name, module in model.named_modules():
            kind = layer_kind(module) if name else None
            if kind is not None:
                module.register_forward_hook(self._hook(name, kind))

    def _hook(self, name, kind):
        def hook(module, inputs, output):
            # Only the first call per pass: a ResBlock calls its `relu` twice; the second call is
            # the block's output, recorded by the block's own hook.
            if self._record is None or name in self._seen or not isinstance(output, torch.Tensor):
                return
            self._seen.add(name)
            self._record.append((name, kind, output.detach()))
            if name in self._relu_after:
                self._record.append((f"{name}.relu", "act", F.relu(output.detach())))
        return hook

    # ------------------------------------------------------------------ api
    def info(self) -> dict:
        """Static facts for GET /api/models: names, shapes, first conv's kernels."""
        params = sum(p.numel() for p in self.model.parameters())
        first = next(iter(self.convs.items()), None)
        kernels = None
        if first is not None:
            name, conv = first
            kernels = {"layer": name, "shape": list(conv.weight.shape),
                       **encode(conv.weight, symmetric=True)}
        return {"name": self.key, "model": self.arch, "checkpoint": self.source,
                "params": params, "in_channels": self.spec.channels,
                "input_kind": self.spec.kind, "input": self.spec.description,
                "data": self.config.get("data"),
                "convs": list(self.convs), "kernels": kernels}

    def _forward(self, x):
        self._record, self._seen = [], set()
        try:
            with torch.inference_mode():
                logits = self.model(x)
            return logits, self._record
        finally:
            self._record = None

    def predict(self, img, maps: bool = True) -> dict:
        """PIL image -> {"model", "pred", "probs"[10], "logits", "layers", "input", "edges", "ms"}."""
        t0 = time.perf_counter()
        prepared = self.spec.prepare(img)
        with INFERENCE_LOCK:
            logits, records = self._forward(prepared.x)
        probs = torch.softmax(logits[0].float(), dim=0)
        layers = []
        for name, kind, out in records:
            row = {"name": name, "kind": kind, "shape": list(out.shape)}
            if maps and out.dim() == 4:
                row.update(encode(out[0]))
            elif maps and out.dim() == 2:
                row["values"] = _round(out[0], 5)
            if kind == "conv":
                row["clickable"] = True
            layers.append(row)
        result = {"model": self.key, "arch": self.arch, "pred": int(probs.argmax()),
                  "probs": _round(probs), "logits": _round(logits[0], 5), "layers": layers}
        if maps:
            grey = torch.from_numpy(prepared.grey)
            result["input"] = {"shape": list(prepared.x.shape), **encode(prepared.x[0])}
            result["edges"] = {"shape": [1, 30, 30], **encode(laplacian_edges(grey)[None])}
        result["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return result

    def formula(self, img, layer: str, p: int, i: int, j: int) -> dict:
        """Formula 5.13 for output pixel (p, i, j) of conv layer `layer` (see formula.py)."""
        conv = self.convs.get(layer)
        if conv is None:
            raise KeyError(f"{layer!r} is not a convolution of model {self.key!r}; "
                           f"its convolutions: {', '.join(self.convs)}")
        prepared = self.spec.prepare(img)
        captured = {}

        def grab(module, inputs, output):
            captured.setdefault("x", inputs[0].detach())
            captured.setdefault("z", output.detach())

        with INFERENCE_LOCK:
            handle = conv.register_forward_hook(grab)
            try:
                self._forward(prepared.x)
            finally:
                handle.remove()
        if "x" not in captured:
            raise KeyError(f"layer {layer!r} is not used by model {self.key!r}'s forward pass")
        result = conv_formula(conv, captured["x"][0], captured["z"][0], p, i, j)
        result.update(model=self.key, layer=layer, input_map=encode(captured["x"][0]))
        return result
