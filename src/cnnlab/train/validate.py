"""Checks at the boundaries of training: each raises a `UserError` naming the bad value, before
any training step runs or any file is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from cnnlab.errors import UserError


def check_int(name: str, value, minimum: int) -> int:
    """`value` as an int >= `minimum`, else UserError('--batch-size must be >= 1, got 0')."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_output_dir(path) -> Path:
    """Create `path` if needed and prove it is writable (write and remove a probe file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"output directory {path} is not writable: {err.strerror or err}") from err
    return path


def check_dataset(dataset, name: str = "dataset") -> tuple[torch.Tensor, torch.Tensor] | None:
    """Non-empty, and (when it has `.images`/`.labels` tensors) images [N,C,H,W] float (or uint8
    pixels, CIFAR-10's, scaled per batch on the device) with N labels. Returns (images, labels)
    when it has them, else None."""
    try:
        n = len(dataset)
    except TypeError:
        n = None
    if n == 0:
        raise UserError(f"the {name} is empty (0 samples); it needs at least one")
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return None
    if images.dim() != 4:
        raise UserError(f"the {name} images must be [N, C, H, W], got shape {list(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise UserError(f"the {name} has {images.shape[0]} images but labels of shape {list(labels.shape)}")
    if not (torch.is_floating_point(images) or images.dtype == torch.uint8):
        raise UserError(f"the {name} images must be floating point or uint8 pixels, got "
                        f"{images.dtype}")
    if images.shape[0] == 0:
        raise UserError(f"the {name} is empty (0 samples); it needs at least one")
    return images, labels


def expected_in_channels(model: torch.nn.Module) -> int | None:
    """The channel count the model's first convolution takes, if it has one."""
    for module in model.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int):
            return channels
    return None


def check_model_input(model: torch.nn.Module, image_shape, model_name: str = "the model") -> int:
    """Run one zero image of shape [C,H,W] through `model` (eval mode, no grad, state unchanged)
    -> the number of outputs (classes). UserError when the model cannot take that shape."""
    shape = list(image_shape)
    channels = expected_in_channels(model)
    if channels is not None and shape and shape[0] != channels:
        raise UserError(f"{model_name} takes {channels}-channel images, the data has "
                        f"{shape[0]} channels (image shape {shape})")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()  # batch norm: use, and do not update, the running statistics
    try:
        with torch.no_grad():
            out = model(torch.zeros([1, *shape], device=device, dtype=dtype))
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{model_name} cannot take images of shape {shape} ({first})") from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise UserError(f"{model_name} gives outputs of shape {list(out.shape)} for one image; "
                        "expected [1, classes]")
    return int(out.shape[1])


def check_labels(labels: torch.Tensor, num_classes: int, name: str = "dataset") -> None:
    """All labels in 0..num_classes-1, else UserError naming the first bad label and its index."""
    if labels.numel() == 0:
        return
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserError(f"the {name} labels must be integers, got {labels.dtype}")
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise UserError(f"the {name} has label {int(labels[i])} at index {i}; a model with "
                        f"{num_classes} outputs needs labels in 0..{num_classes - 1}")


def check_data_for_model(model: torch.nn.Module, datasets: dict, model_name: str = "the model") -> None:
    """Every dataset in {name: dataset} non-empty, shaped for `model`, labels in range."""
    for name, dataset in datasets.items():
        if dataset is None:
            continue
        tensors = check_dataset(dataset, name)
        if tensors is None:
            continue
        images, labels = tensors
        num_classes = check_model_input(model, images.shape[1:], model_name)
        check_labels(labels, num_classes, name)
