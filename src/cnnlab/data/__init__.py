"""Data for the lab: MNIST from three sources, preprocessed once (`load_mnist`), batched from
cached tensors (`TensorLoader`), and user image files for prediction (`load_image`).

Names are imported on first use (PEP 562), so `cnnlab --help` does not pay for importing torch.
"""

import importlib

_WHERE = {
    "load_image": "images", "prepare_image": "images",
    "TensorLoader": "loader",
    "SOURCE_HELP": "sources",
    **{name: "mnist" for name in ("SPLITS", "ImageSet", "MnistData", "load_mnist", "parse_source",
                                  "preprocess", "read_idx")},
}

__all__ = ["load_mnist", "MnistData", "ImageSet", "TensorLoader", "preprocess", "read_idx",
           "parse_source", "load_image", "prepare_image", "SOURCE_HELP", "SPLITS"]


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'cnnlab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cnnlab.data.{_WHERE[name]}"), name)
