"""`cnnlab data fetch cifar10` and `cnnlab data info SOURCE`: get a data set, look at one.

    cnnlab data fetch cifar10                  # into data/cifar-10-batches-py, MD5-checked
    cnnlab data info cifar10:data              # sizes, classes, load time
"""

from __future__ import annotations

import time

from cnnlab.data.sources import SOURCE_HELP

# Spelled out so that building the parser does not import the data modules (a test keeps them
# equal to cnnlab.data.fetch's).
DEFAULT_ROOT = "data"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"


def register(sub):
    p = sub.add_parser("data", help="download a data set (CIFAR-10) or check one",
                       description="Get and inspect the lab's data sets.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True

    f = data_sub.add_parser(
        "fetch", help="download CIFAR-10 (the official archive, MD5-checked) into a folder",
        description=(
            "Download the official CIFAR-10 python archive (the address torchvision uses) into a "
            "temp file in DIR with a progress bar, check its size and MD5, check every archive "
            "member (no absolute names, '..', links or devices), extract it into a temp folder, "
            "read every batch back, and only then rename DIR/cifar-10-batches-py into place. "
            "Any failure (or Ctrl-C) leaves DIR as it was. A data set already in DIR "
            "(torchvision's download: cifar-10-batches-py/ with the official MD5s, or "
            "cifar-10-python.tar.gz) is used where it lies. Prints the --data value to use."),
    )
    f.add_argument("dataset", choices=("cifar10",), help="the data set (cifar10)")
    f.add_argument("--root", metavar="DIR", default=DEFAULT_ROOT,
                   help=f"folder to put it in (default {DEFAULT_ROOT}/, relative to the current "
                        "folder; created if needed)")
    f.add_argument("--url", default=OFFICIAL_URL, help=f"download address (default {OFFICIAL_URL})")
    f.add_argument("--md5", default=OFFICIAL_MD5, metavar="HEX",
                   help=f"expected MD5 of the archive (default {OFFICIAL_MD5}, the official one)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=fetch)

    i = data_sub.add_parser(
        "info", help="load a data set and print its sizes, classes and load time",
        description="Load SOURCE as train/evaluate would (every file read and checked) and print "
                    "the images per part, the class names and how long loading took.")
    i.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    i.add_argument("--split", choices=("lab", "full"), default="lab", help="split (default lab)")
    i.set_defaults(func=info)


def fetch(args) -> int:
    from cnnlab.data.fetch import fetch_cifar10

    result = fetch_cifar10(args.root, url=args.url, md5=args.md5, progress=not args.quiet)
    how = ("downloaded and MD5-checked" if result.action == "downloaded"
           else "already there (MD5-checked), used where it lies")
    print(f"CIFAR-10: {result.path} ({how})")
    print(f"use it with: --data {result.data}")
    return 0


def info(args) -> int:
    import cnnlab.data.cifar10  # noqa: F401  (imports torch: not part of the load time)
    import cnnlab.data.mnist  # noqa: F401
    from cnnlab.data.load import load_data

    start = time.perf_counter()
    data = load_data(args.source, args.split)
    seconds = time.perf_counter() - start
    sizes = " / ".join(f"{name} {len(data.part(name)):,}" for name in ("train", "dev", "test"))
    print(f"{args.source}: {sizes} images of {list(data.train.images.shape[1:])} "
          f"{str(data.train.images.dtype).removeprefix('torch.')}; loaded in {seconds:.2f} s")
    classes = getattr(data, "classes", None) or [str(c) for c in range(10)]
    print(f"classes: {', '.join(classes)}")
    return 0
