"""`cnnlab edges [IMAGE]`: the lab's Laplacian edge detection (section 5.1.7) as a figure."""

from __future__ import annotations

import argparse

from cnnlab.errors import UserError

EPILOG = """\
As the lab: the image is read as grey levels 0-255 and resized to 256x256 (PIL's default filter),
then convolved (stride 1, no padding) with the 8-neighbour Laplacian kernel
[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]], giving a 254x254 feature map. Without IMAGE, a digit of the
bundled MNIST test split (index 1, a 4) is used.
"""


def register(sub):
    p = sub.add_parser("edges", help="the lab's Laplacian edge-detection figure",
                       description="Detect edges with the lab's 3x3 Laplacian kernel and save the "
                                   "two-panel figure (input image, output feature map).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", nargs="?", default=None,
                   help="an image file (default: a bundled MNIST digit)")
    p.add_argument("--out", metavar="PNG", default="edges.png", help="output figure (default edges.png)")
    p.add_argument("--size", type=int, default=256,
                   help="resize the image to SIZE x SIZE first, as the lab (default 256; 0 keeps it)")
    p.add_argument("--impl", choices=("fast", "reference", "native"), default="fast",
                   help="convolution implementation (default fast)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.ops.edges import edge_images
    from cnnlab.report.figures import save_edges_figure

    if args.size < 0 or args.size in (1, 2):
        raise UserError(f"--size must be 0 or at least 3, got {args.size}")
    if args.image is None:
        from cnnlab.data import load_mnist

        picture = load_mnist().test.raw[1].numpy()  # a bundled digit (a 4), 28x28 grey levels
    else:
        from cnnlab.data.images import load_image

        picture = load_image(args.image)
    arr, out = edge_images(picture, args.size, args.impl)
    path = save_edges_figure(arr, out, args.out)
    print(f"edges of a {arr.shape[1]}x{arr.shape[0]} image -> {out.shape[1]}x{out.shape[0]} "
          f"feature map (range {out.min():g}..{out.max():g}); figure: {path}")
    return 0
