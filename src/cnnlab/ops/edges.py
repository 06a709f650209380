"""The lab's edge detector (section 5.1.7): the 8-neighbour Laplacian kernel.

Each output pixel is 8 times itself minus its 8 neighbours (the 4-neighbour Laplacian plus its
45-degree rotation), computed as a stride-1, padding-0 convolution: [H,W] -> [H-2,W-2].
`edge_images` is the lab's whole figure: a picture resized to 256x256, then its edges.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab.ops import conv2d
from cnnlab.ops._checks import OpError

LAPLACIAN_KERNEL = ((-1.0, -1.0, -1.0),
                    (-1.0, 8.0, -1.0),
                    (-1.0, -1.0, -1.0))


def laplacian_edges(image, impl="fast"):
    """Edge map of a grey image: [H,W] -> [H-2,W-2], [B,H,W] -> [B,H-2,W-2], [B,1,H,W] -> same rank.

    Integer images (e.g. uint8 pixels) are converted to float32 first.
    """
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


def edge_images(image, size: int = 256, impl: str = "fast") -> tuple[np.ndarray, np.ndarray]:
    """The lab's figure for a grey picture (a PIL image or an [H,W] array of 0-255 levels) ->
    (input float32 [S,S] as convolved, edges float32 [S-2,S-2]), S = `size`.

    As the lab: resized to size x size with PIL's default filter first (size 0 keeps the
    picture's own size). OpError when the size or the picture is too small for the 3x3 kernel."""
    from PIL import Image

    if size < 0 or size in (1, 2):
        raise OpError("edge_images", f"size must be 0 or at least 3, got {size}")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if size:
        picture = picture.resize((size, size))  # the lab: Image.open(...).resize((256, 256))
    if min(picture.size) < 3:
        raise OpError("edge_images", f"the picture is {picture.size[0]}x{picture.size[1]}: the "
                                     "3x3 kernel needs at least 3x3 pixels")
    grey = np.asarray(picture, dtype=np.float32)
    return grey, laplacian_edges(torch.from_numpy(grey), impl=impl).numpy()
