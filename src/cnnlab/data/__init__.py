"""Data for the lab: MNIST from three sources, preprocessed once (`load_mnist`); CIFAR-10 from
the official python batches as uint8 tensors (`load_cifar10`, `normalize`, `fetch_cifar10`);
`load_data(source)` for either; batches from cached tensors (`TensorLoader`); user image files
for prediction (`load_image`, `load_rgb_image`); `subset(data, n)` for a quick look.

Names are imported on first use (PEP 562), so `cnnlab --help` does not pay for importing torch.
"""

import importlib

_WHERE = {
    "load_image": "images", "prepare_image": "images", "load_rgb_image": "images",
    "prepare_rgb_image": "images",
    "TensorLoader": "loader",
    "SOURCE_HELP": "sources", "parse_source": "sources", "load_data": "load", "subset": "load",
    "to_device": "load",
    "fetch_cifar10": "fetch",
    **{name: "cifar10" for name in ("CifarData", "load_cifar10", "normalize",
                                    "CIFAR10_MEAN", "CIFAR10_LAB_STD", "CIFAR10_STD")},
    **{name: "mnist" for name in ("SPLITS", "ImageSet", "MnistData", "load_mnist",
                                  "preprocess", "read_idx")},
}

__all__ = ["load_data", "subset", "to_device", "load_mnist", "MnistData", "ImageSet",
           "TensorLoader", "preprocess", "read_idx", "parse_source", "load_image",
           "prepare_image", "load_rgb_image", "prepare_rgb_image", "SOURCE_HELP", "SPLITS",
           "load_cifar10", "CifarData", "normalize", "fetch_cifar10", "CIFAR10_MEAN",
           "CIFAR10_LAB_STD", "CIFAR10_STD"]


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'cnnlab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cnnlab.data.{_WHERE[name]}"), name)
