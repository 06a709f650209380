"""Weights from and for other frameworks: the lab's PaddlePaddle `.pdparams` files (`cnnlab.interop.paddle`)."""

from cnnlab.interop.paddle import (
    PaddleTransfer,
    detect_layout,
    load_paddle_weights,
    paddle_state_dict,
    read_pdparams,
    write_pdparams,
)
from cnnlab.interop.paddle_layouts import LAYOUT_NAMES
from cnnlab.data.safe_pickle import UnsafePickleError

__all__ = [
    "LAYOUT_NAMES",
    "PaddleTransfer",
    "UnsafePickleError",
    "detect_layout",
    "load_paddle_weights",
    "paddle_state_dict",
    "read_pdparams",
    "write_pdparams",
]
