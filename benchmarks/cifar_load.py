"""CIFAR-10 loading time: `load_cifar10` on a full-size data set in the official format.

    python benchmarks/cifar_load.py [--per-batch 10000] [--reps 5] [--data DIR] [--json]

Writes a synthetic CIFAR-10 of the official sizes (5 x 10,000 training + 10,000 test images,
Python 2 cPickle files, see cnnlab.data.synthetic) and its .tar.gz to a temp folder, unless
--data names a folder holding cifar-10-batches-py/ (the real one). Then times, with the loader's
cache cleared before each load:
- A: torchvision's way, unchecked: `pickle.load(f, encoding="latin1")` of each file (no
  restrictions: the file could run code), stacking and reshaping the arrays;
- B: `load_cifar10(folder)`: the restricted unpickler, every check, the lab split as tensors;
- `load_cifar10(archive)`: the same read from the .tar.gz in memory (one gzip pass).
A and B alternate (A B, B A, ...); the figures are medians and the median ratio B / A. The files
sit in the page cache (they were just written or read): this is the time to read and check, not
the disk's. Target: B <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnlab.data import cifar10
from cnnlab.data.synthetic import ARCHIVE, FOLDER, write_cifar10
from cnnlab.runinfo import cpu_model


def torchvision_way(folder: Path):
    """What torchvision's CIFAR10 does (without its MD5 pass): unrestricted pickle, reshape."""
    parts = []
    for files in cifar10.PART_FILES.values():
        data, labels = [], []
        for name in files:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data.append(entry["data"])
            labels.extend(entry["labels"])
        parts.append((np.vstack(data).reshape(-1, 3, 32, 32), labels))
    return parts


def ours(source):
    cifar10._load_cached.cache_clear()
    return cifar10.load_cifar10(source)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-batch", type=int, default=10_000,
                    help="images per synthetic batch (default 10000, the official size)")
    ap.add_argument("--reps", type=int, default=5, help="A/B pairs (default 5)")
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="time this folder (holding cifar-10-batches-py/) instead")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cifar-load-") as tmp:
        if args.data:
            folder = Path(args.data) / FOLDER
            archive = Path(args.data) / ARCHIVE
            write_s = None
        else:
            start = time.perf_counter()
            write_cifar10(tmp, per_batch=args.per_batch, archive=True, compresslevel=1)
            write_s = time.perf_counter() - start
            folder, archive = Path(tmp) / FOLDER, Path(tmp) / ARCHIVE
        data = ours(folder)
        size_mb = sum((folder / f).stat().st_size for f in cifar10.FILES) / 1e6
        torchvision_way(folder)  # warm-up: both sides read from the page cache
        ta, tb = [], []
        for r in range(args.reps):
            if r % 2 == 0:
                a, b = timed(lambda: torchvision_way(folder)), timed(lambda: ours(folder))
            else:
                b, a = timed(lambda: ours(folder)), timed(lambda: torchvision_way(folder))
            ta.append(a)
            tb.append(b)
        tz = [timed(lambda: ours(archive)) for _ in range(max(1, args.reps // 2))] \
            if archive.is_file() else []
        cifar10._load_cached.cache_clear()

    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
        "source": args.data or f"synthetic, {args.per_batch} images per batch",
        "images": data.sizes, "files_mb": round(size_mb, 1), "write_s": write_s,
        "torchvision_way_s": statistics.median(ta), "load_cifar10_folder_s": statistics.median(tb),
        "ratio": statistics.median(b / a for a, b in zip(ta, tb)),
        "load_cifar10_archive_s": statistics.median(tz) if tz else None,
        "pairs": len(ta),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['cpu']} ({result['cores']} cores), load average {result['load_average']:.1f}; "
          f"{result['source']}: train {data.sizes['train']:,} / dev {data.sizes['dev']:,} / test "
          f"{data.sizes['test']:,} images, {size_mb:.0f} MB of batches; median of {len(ta)}\n")
    print(f"  A  torchvision's way (unrestricted pickle)  {result['torchvision_way_s']:6.2f} s")
    print(f"  B  load_cifar10(folder), checked            {result['load_cifar10_folder_s']:6.2f} s"
          f"   (target <= 3 s)")
    if tz:
        print(f"     load_cifar10(archive .tar.gz)           "
              f"{result['load_cifar10_archive_s']:6.2f} s")
    print(f"  B / A (median of pairs)                     {result['ratio']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
