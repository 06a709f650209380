"""`load_data(source, split)`: the loader a source names (MNIST or CIFAR-10).

A module of its own so that `sources` (which the loaders import) imports no loader.
"""

from __future__ import annotations

from cnnlab.data.sources import parse_source


def load_data(source: str = "bundled", split: str = "lab"):
    """The data set `source` names -> `MnistData` (bundled, idx:, nndl-json:) or `CifarData`
    (cifar10:), both with `.train/.dev/.test` and `.part(name)`. Cached; treat as read-only."""
    kind, path = parse_source(source)
    if kind == "cifar10":
        from cnnlab.data.cifar10 import load_cifar10

        return load_cifar10(path, split)
    from cnnlab.data.mnist import load_mnist

    return load_mnist(source, split)
