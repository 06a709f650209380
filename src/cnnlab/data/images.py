"""User image files for `cnnlab predict` and `cnnlab edges`.

For an MNIST model (one grey channel), an arbitrary picture is brought to what it saw in training:
1. converted to one grey channel (PIL mode "L"; colour and alpha are dropped),
2. resized to 28x28 with PIL bilinear (the size of an MNIST digit),
3. inverted when it looks like dark ink on light paper (MNIST digits are light on a dark
   background): with `invert="auto"` when the mean of its border pixels is above 127,
4. then preprocessed exactly like the training images (bilinear 28->32, (x - 127.5) / 127.5).

For a CIFAR-10 model (`load_rgb_image`, `prepare_rgb_image`), like CIFAR's own test images,
which are small photos of one object: RGB (transparent areas on white), the largest centred
square cropped (so the object keeps its shape), resized to 32x32 with PIL's bicubic filter
(antialiased when it shrinks), as uint8 [3, 32, 32] in R, G, B order: the model's own
normalisation is applied per batch, as in training (`cnnlab.train.batches`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnlab.errors import UserError
from cnnlab.data.mnist import preprocess


def load_image(path, mode: str = "L") -> Image.Image:
    """Open an image file as a PIL image of `mode` ("L": grey, for MNIST models; "RGB": for
    CIFAR-10 models), transparent areas on white; an unreadable file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return flatten_alpha(img).convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {err}; expected a PNG, JPEG, BMP, GIF or "
                        "other image file Pillow can open") from err


def flatten_alpha(img: Image.Image) -> Image.Image:
    """An image with transparency composited onto white (so transparent areas do not turn black);
    other images are returned as they are."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        back = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, img)
    return img


def prepare_image(img: Image.Image, invert="auto"):
    """Grey PIL image -> (raw uint8 [28,28], model input float32 [1,1,32,32])."""
    raw = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR), dtype=np.uint8)
    if invert == "auto":
        border = np.concatenate([raw[0], raw[-1], raw[1:-1, 0], raw[1:-1, -1]])
        invert = bool(border.mean() > 127)
    if invert is True or invert == "yes":
        raw = 255 - raw
    return raw, preprocess(raw[None])


def image_batch(paths, invert="auto") -> torch.Tensor:
    """Several image files -> float32 [N,1,32,32] ready for a model trained on the lab's data."""
    return torch.cat([prepare_image(load_image(p), invert)[1] for p in paths])


def load_rgb_image(path) -> Image.Image:
    """`load_image` in RGB, for a CIFAR-10 model."""
    return load_image(path, "RGB")


def prepare_rgb_image(img: Image.Image, size: int = 32) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, size, size] (R, G, B planes) like a CIFAR-10 image: the largest
    centred square, resized with bicubic filtering."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = img.convert("RGB").crop((left, top, left + side, top + side))
    pixels = np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()  # [H,W,3] -> [3,H,W]
