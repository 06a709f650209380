"""The lab's edge detector (section 5.1.7): the 8-neighbour Laplacian kernel.

Each output pixel is 8 times itself minus its 8 neighbours (the 4-neighbour Laplacian plus its
45-degree rotation), computed as a stride-1, padding-0 convolution: [H,W] -> [H-2,W-2].
"""

from __future__ import annotations

import torch

from ._checks import OpError

LAPLACIAN_KERNEL = ((-1.0, -1.0, -1.0),
                    (-1.0, 8.0, -1.0),
                    (-1.0, -1.0, -1.0))


def laplacian_edges(image, impl="fast"):
    """Edge map of a grey image: [H,W] -> [H-2,W-2], [B,H,W] -> [B,H-2,W-2], [B,1,H,W] -> same rank.

    Integer images (e.g. uint8 pixels) are converted to float32 first.
    """
    from cnnlab.ops import conv2d   # late import: ops/__init__ imports this module

    if not isinstance(image, torch.Tensor):
        raise OpError("laplacian_edges", f"expected a torch.Tensor image, got {type(image).__name__}")
    if image.dim() == 4 and image.shape[1] != 1:
        raise OpError("laplacian_edges", f"expected a grey image [B,1,H,W], got {list(image.shape)}")
    if image.dim() not in (2, 3, 4):
        raise OpError("laplacian_edges", "expected an image [H,W], [B,H,W] or [B,1,H,W], got "
                                         f"{list(image.shape)}")
    if not image.is_floating_point():
        image = image.float()
    kernel = torch.tensor(LAPLACIAN_KERNEL, dtype=image.dtype, device=image.device)
    if image.dim() == 2:
        return conv2d(image[None], kernel, impl=impl)[0]
    if image.dim() == 3:
        return conv2d(image, kernel, impl=impl)
    return conv2d(image, kernel[None, None], impl=impl)
