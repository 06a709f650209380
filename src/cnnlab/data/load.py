"""`load_data(source, split)`: the loader a source names (MNIST or CIFAR-10); `subset(data, n)`:
the first n images of each part, for a quick look; `to_device(data, device)`: the parts moved to
the training device once (the GPU reads its batches without a host-to-device copy per step).

A module of its own so that `sources` (which the loaders import) imports no loader.
"""

from __future__ import annotations

import dataclasses

from cnnlab.data.sources import parse_source
from cnnlab.errors import UserError

PARTS = ("train", "dev", "test")


def load_data(source: str = "bundled", split: str = "lab"):
    """The data set `source` names -> `MnistData` (bundled, idx:, nndl-json:) or `CifarData`
    (cifar10:), both with `.train/.dev/.test` and `.part(name)`. Cached; treat as read-only."""
    kind, path = parse_source(source)
    if kind == "cifar10":
        from cnnlab.data.cifar10 import load_cifar10

        return load_cifar10(path, split)
    from cnnlab.data.mnist import load_mnist

    return load_mnist(source, split)


def subset(data, sizes):
    """The first n images of each part (views, no copy) -> a data set of the same kind.

    sizes: one n for every part, or (n_train, n_dev, n_test). A part smaller than its n is
    kept whole; n < 1 is a UserError (`--subset 0`)."""
    from cnnlab.data.mnist import ImageSet

    sizes = (sizes,) * 3 if isinstance(sizes, int) else tuple(sizes)
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"--subset must be an integer >= 1 (images per part), got {n!r}")
    parts = {}
    for name, n in zip(PARTS, sizes):
        part = getattr(data, name)
        parts[name] = ImageSet(part.images[:n], part.labels[:n], part.raw[:n], part.indices[:n])
    label = " / ".join(str(min(n, len(getattr(data, p)))) for p, n in zip(PARTS, sizes))
    return dataclasses.replace(data, **parts, split=f"{data.split} (subset {label})")


def to_device(data, device):
    """The parts' images and labels on `device` (a no-op on the CPU); `raw` stays where it is."""
    from cnnlab.data.mnist import ImageSet

    parts = {}
    for name in PARTS:
        part = getattr(data, name)
        parts[name] = ImageSet(part.images.to(device), part.labels.to(device), part.raw,
                               part.indices)
    return dataclasses.replace(data, **parts)
