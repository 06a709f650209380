"""Mixed precision for training: `Precision(mode, device)` gives the Runner its autocast context,
its backward and its optimizer step.

    mode "off"   float32 everywhere (the lab, part 1): a no-op context, loss.backward(), step()
    mode "bf16"  torch.autocast(dtype=bfloat16): convolutions and matrix products in bfloat16,
                 everything else as autocast decides; no loss scaling (bfloat16 has float32's
                 exponent range)
    mode "fp16"  torch.autocast(dtype=float16) with a `torch.amp.GradScaler` (float16 gradients
                 underflow without it); the scaler's state goes into last.pt

BatchNorm stays in float32 under autocast: its weights and running statistics are float32
parameters and buffers (autocast never casts parameters; the float32 master weights are what
the optimizer updates), it normalises in float32 internally (cuDNN and the CPU kernel accept
a low-precision input with float32 parameters), and only its output follows the input's dtype.
The loss (cross-entropy) is computed in float32 by autocast's own rules.
"""

from __future__ import annotations

import contextlib

import torch

AMP_MODES = ("off", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, mode: str = "off", device="cpu"):
        if mode not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
        self.mode = mode
        self.device_type = torch.device(device).type
        self.dtype = DTYPES.get(mode)
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    def autocast(self):
        """The context a forward pass (and its loss) runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer) -> None:
        """optimizer.step(), through the scaler in fp16 (which skips a step whose gradients
        overflowed and lowers the scale)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
