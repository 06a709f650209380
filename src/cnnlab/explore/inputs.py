"""Image bytes from a request -> what a model sees: safe decoding, then per-model preparation.

Decoding (`decode_image`) trusts nothing in the bytes: only PNG, JPEG, BMP, GIF and WebP are
opened, from memory (never a path); the size in the header is checked against `MAX_PIXELS` before
any pixel is decoded (a decompression bomb is refused without being expanded); a truncated or
undecodable file is an `ImageError`. Pillow's global `Image.MAX_IMAGE_PIXELS` is left alone.

Preparation is chosen per model from its checkpoint (`input_spec(payload, model)`):
- MNIST sources ("bundled", "idx:DIR", "nndl-json:FILE", or no data recorded): the lab's
  preprocessing of `cnnlab.data.images.prepare_image` (grey, 28x28, inverted when the border is
  light, bilinear 28->32, (x - 127.5) / 127.5); a model with C > 1 input channels gets the grey
  image on every channel, as `cnnlab predict` does.
- "cifar..." sources: RGB resized to 32x32 bilinear, normalised per channel with the data module's
  mean and std when it provides them (`cnnlab.data.cifar10.CIFAR10_MEAN` / `CIFAR10_STD`, 0-1
  scale), else 0.5/0.5 (said in the spec's description). A drawn grey digit becomes R = G = B.
`register_input_kind(prefix, factory)` adds another data source.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from cnnlab.data.images import flatten_alpha, prepare_image

MAX_PIXELS = 4096 * 4096    # 16.8 MP: a phone photo fits, a decompression bomb does not
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
SIZE = 32                   # every cnnlab model takes 32x32 inputs


class ImageError(ValueError):
    """The request's bytes are not an image this page accepts; the message says why."""


def decode_image(data: bytes) -> Image.Image:
    """Bytes -> a loaded PIL image (first frame), transparency composited onto white."""
    if not data:
        raise ImageError("empty body: expected an image file (PNG, JPEG, BMP, GIF or WebP)")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Exception as err:  # UnidentifiedImageError, or a header that makes a decoder fail
        raise ImageError("not an image this page reads: expected PNG, JPEG, BMP, GIF or WebP") from err
    w, h = img.size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise ImageError(f"image is {w}x{h} pixels; at most {MAX_PIXELS:,} pixels are accepted")
    try:
        img.load()  # a truncated file raises here (Pillow's LOAD_TRUNCATED_IMAGES is False)
    except Exception as err:
        raise ImageError(f"cannot decode the {img.format} image (truncated or damaged): {err}") from err
    return flatten_alpha(img)


@dataclass
class Prepared:
    """x: model input [1,C,32,32] float32; grey: what the model sees as grey levels 0-255 [32,32]."""

    x: torch.Tensor
    grey: np.ndarray


@dataclass
class InputSpec:
    """How one model's input is made from an image: `prepare(img) -> Prepared`."""

    kind: str
    channels: int
    description: str
    prepare: Callable[[Image.Image], Prepared]


def mnist_spec(channels: int) -> InputSpec:
    def prepare(img: Image.Image) -> Prepared:
        _, x = prepare_image(img.convert("L"))          # [1,1,32,32], (v - 127.5) / 127.5
        grey = (x[0, 0].numpy() * 127.5 + 127.5)        # back to the 0-255 grey levels it came from
        if channels != 1:
            x = x.expand(-1, channels, -1, -1).contiguous()  # the grey image on every channel
        return Prepared(x, grey)

    copies = "" if channels == 1 else f", the grey image on all {channels} channels"
    return InputSpec("mnist", channels, "the lab's MNIST preprocessing: grey, 28x28 (inverted if "
                     "the border is light), bilinear 28->32, (x - 127.5) / 127.5" + copies, prepare)


def rgb_spec(channels: int, mean=None, std=None) -> InputSpec:
    assumed = mean is None or std is None
    mean = np.asarray((0.5,) * channels if mean is None else mean, dtype=np.float32)
    std = np.asarray((0.5,) * channels if std is None else std, dtype=np.float32)

    def prepare(img: Image.Image) -> Prepared:
        rgb = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        arr = np.asarray(rgb, dtype=np.float32)                      # [32,32,3] 0-255
        grey = arr.mean(axis=2)
        if channels == 1:
            arr = grey[..., None]
        x = (arr / 255.0 - mean[:arr.shape[2]]) / std[:arr.shape[2]]
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]   # [1,C,32,32]
        return Prepared(x.float(), grey)

    how = "mean/std 0.5 (assumed: the data module gives none)" if assumed else \
        f"mean {[round(float(v), 4) for v in mean]}, std {[round(float(v), 4) for v in std]}"
    return InputSpec("rgb", channels, f"RGB, bilinear to 32x32, (x/255 - mean) / std with {how}",
                     prepare)


def _cifar_factory(channels: int, config: dict) -> InputSpec:
    """CIFAR-10: RGB, /255, then the mean/std the run trained with (its `normalize` setting: the
    notebook's std for the lab recipe, the per-channel std for the fast one)."""
    from cnnlab.train.recipes import normalization

    mean, std = normalization(config.get("normalize") or "channel")
    return rgb_spec(channels, mean, std)


# data-source prefix -> factory(channels, run config) -> InputSpec; the first matching prefix wins
_KINDS: list[tuple[str, Callable[[int, dict], InputSpec]]] = [("cifar", _cifar_factory)]


def register_input_kind(prefix: str, factory: Callable[[int, dict], InputSpec]) -> None:
    """Use `factory(channels, run config)` for models trained on data sources that start with `prefix`."""
    _KINDS.insert(0, (prefix, factory))


def model_in_channels(payload: dict, model: torch.nn.Module) -> int:
    kwargs = (payload.get("model") or {}).get("kwargs") or {}
    if isinstance(kwargs.get("in_channels"), int):
        return kwargs["in_channels"]
    for m in model.modules():  # the first layer with an in_channels attribute
        if hasattr(m, "in_channels"):
            return int(m.in_channels)
    return 1


def input_spec(payload: dict, model: torch.nn.Module) -> InputSpec:
    """The preparation for a loaded checkpoint, from its config's data source and channels."""
    channels = model_in_channels(payload, model)
    config = payload.get("config") or {}
    source = str(config.get("data") or "bundled")
    for prefix, factory in _KINDS:
        if source.startswith(prefix):
            return factory(channels, config)
    return mnist_spec(channels)
