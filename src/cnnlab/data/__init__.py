"""Data for the lab: MNIST from three sources, preprocessed once (`load_mnist`), batched from
cached tensors (`TensorLoader`), and user image files for prediction (`load_image`)."""

from cnnlab.data.images import load_image, prepare_image
from cnnlab.data.loader import TensorLoader
from cnnlab.data.mnist import (SOURCE_HELP, SPLITS, ImageSet, MnistData, load_mnist,
                               parse_source, preprocess, read_idx)

__all__ = ["load_mnist", "MnistData", "ImageSet", "TensorLoader", "preprocess", "read_idx",
           "parse_source", "load_image", "prepare_image", "SOURCE_HELP", "SPLITS"]
