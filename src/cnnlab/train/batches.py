"""The batch-transform stage between the loader and the model: uint8 CIFAR-10 batches become
normalised float batches, augmented in training, on the training device, a whole batch at a time.

    transform = BatchTransform(mean, std, augment="crop-flip", seed=cfg.seed, device=device)
    x = transform(x_uint8, train=True)    # [B,3,32,32] uint8 on the device -> float32 [B,3,32,32]

Augmentation "crop-flip" (the fast CIFAR trainers': airbench, David Page's ResNet, kuangliu):
a random 32x32 crop of the image padded by 4 pixels on each side with REFLECT padding (the
image's own pixels mirrored at the border, as airbench pads; kuangliu pads with zeros), and a
horizontal flip of half the images. Both are done by one gather of the uint8 batch (no padded
copy, no PIL, no per-image Python): row/column indices are computed per image, reflected at
the border, reversed for a flipped image, and read with `torch.gather`.

Random draws, per training batch of B images, from the transform's own CPU generator (seeded
from the run's seed, so CPU and GPU runs draw the same crops, and its state goes into last.pt
for exact resume): `torch.randint(0, 2*pad+1, (2, B))` (row, column offsets), then
`torch.randint(0, 2, (B,))` (flip). Evaluation (train=False) draws nothing and changes nothing
but the normalisation.

`flip_tta(model, x)`: test-time augmentation, the logits of x and of its mirror image averaged.
"""

from __future__ import annotations

import torch

from cnnlab.data.cifar10 import normalize

AUGMENTS = ("none", "crop-flip")
PAD = 4
# A seed for the augmentation stream that differs from the data order's (seeded with the run's
# seed itself): a fixed odd multiplier and increment (PCG's) mix the run's seed.
_MIX = (6364136223846793005, 1442695040888963407)


def augment_seed(seed: int) -> int:
    """The augmentation generator's seed for a run seeded with `seed` (0..2**64-1)."""
    return (seed * _MIX[0] + _MIX[1]) % 2**64


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices -pad..size-1+pad -> 0..size-1, mirrored at the border without repeating the
    edge pixel (F.pad's mode="reflect"): -1 -> 1, size -> size - 2."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flip: torch.Tensor, pad: int = PAD):
    """x [B,C,H,W] (any dtype, any device) -> [B,C,H,W]: image b is the crop at (row, column)
    offsets[:, b] (0..2*pad) of x[b] reflect-padded by `pad`, mirrored left-right if flip[b].

    Equal to `F.pad(x, (pad,) * 4, mode="reflect")[b, :, dy:dy+H, dx:dx+W]` (then `.flip(-1)`),
    computed as one gather of x: no padded copy."""
    b, c, h, w = x.shape
    offsets = offsets.to(x.device, non_blocking=True)
    flip = flip.to(x.device, non_blocking=True).bool()
    rows = offsets[0, :, None] - pad + torch.arange(h, device=x.device)        # [B, H]
    cols = offsets[1, :, None] - pad + torch.arange(w, device=x.device)        # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    pixels = _reflect(rows, h)[:, :, None] * w + _reflect(cols, w)[:, None, :]  # [B, H, W]
    index = pixels.view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


class BatchTransform:
    """uint8 images [B,C,H,W] on the training device -> `dtype` (x/255 - mean)/std, randomly
    cropped and flipped in training when augment="crop-flip"; channels-last when asked.

    mean, std: per-channel tuples (pixels in 0..1), kept on `device` as tensors; mean=None
    leaves the values alone (images already preprocessed, e.g. MNIST's float tensors)."""

    def __init__(self, mean=None, std=None, augment: str = "none", seed: int = 0,
                 channels_last: bool = False, device="cpu", pad: int = PAD):
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        device = torch.device(device)
        self.mean = None if mean is None else torch.tensor(mean, device=device)
        self.std = None if std is None else torch.tensor(std, device=device)
        self.augment = augment
        self.pad = pad
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(augment_seed(seed))

    def __call__(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        if train and self.augment == "crop-flip":
            x = crop_flip(x, *self.draw(x.shape[0]), pad=self.pad)
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def draw(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The random (offsets [2, B], flip [B]) of one training batch; advances the generator."""
        offsets = torch.randint(0, 2 * self.pad + 1, (2, batch), generator=self.generator)
        flip = torch.randint(0, 2, (batch,), generator=self.generator)
        return offsets, flip

    def get_state(self) -> torch.Tensor | None:
        """The augmentation generator's state (None when nothing is random)."""
        return self.generator.get_state() if self.augment != "none" else None

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def flip_tta(model, x: torch.Tensor) -> torch.Tensor:
    """Logits [B, K] of x [B,C,H,W] averaged with those of its left-right mirror image."""
    return (model(x) + model(x.flip(3))) / 2
