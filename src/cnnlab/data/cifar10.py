"""CIFAR-10 for part 2 of the lab: the official python batches, read without trusting the pickles.

Source (`load_cifar10(source)`, or `--data cifar10:PATH`): a folder holding `cifar-10-batches-py/`
(torchvision's download layout), that folder itself, or the `cifar-10-python.tar.gz` archive (read
from the tar in memory, nothing extracted), also when it lies in the given folder.

Split "lab" (the notebook's): data_batch_1..4 -> train 40,000; data_batch_5 -> dev 10,000;
test_batch -> test 10,000. "full" is the same split: the lab's already uses every image.

Each batch is a Python 2 cPickle (protocol 2) of a dict: `data` uint8 [N, 3072] (the R, G, B
planes of 32x32 row-major pixels), `labels` N ints 0..9, `batch_label`, `filenames`;
`batches.meta` has `label_names` (10), `num_cases_per_batch` and `num_vis` (3072). They are
unpickled by `safe_pickle` with the CIFAR-10 allow-list (numpy array and dtype reconstruction,
nothing else) and checked; an error names the file and the fault.

Images stay uint8 [N, 3, 32, 32] (R, G, B), 184 MB for all 60,000: scaling, normalisation and
augmentation are done per batch on the training device (`normalize`), not per item in Python.
Loads are cached in memory (keyed by each file's path, size and mtime).
"""

from __future__ import annotations

import functools
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.mnist import ImageSet
from cnnlab.data.safe_pickle import CIFAR10_BATCH, READ_ERRORS, UnsafePickleError, safe_load
from cnnlab.data.sources import file_key
from cnnlab.errors import UserError

# Per-channel mean of the 50,000 training images (R, G, B), pixels scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
# The notebook's std (kuangliu/pytorch-cifar's): the mean over images of each image's own std,
# not the std of the channel; kept because the lab's recipe normalises with it.
CIFAR10_LAB_STD = (0.2023, 0.1994, 0.2010)
# The true per-channel std of the 50,000 training images (the fast recipe's).
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
META_FILE = "batches.meta"
PART_FILES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"),
    "dev": ("data_batch_5",),
    "test": ("test_batch",),
}
FILES = (META_FILE, *(f for files in PART_FILES.values() for f in files))
SPLITS = ("lab", "full")
PIXELS = 3 * 32 * 32
NUM_CLASSES = 10
EXPECTED = (f"a folder holding {FOLDER}/ (torchvision's download), that folder itself, or "
            f"{ARCHIVE}; get it with `cnnlab data fetch cifar10`")
BATCH_FORMAT = ("a CIFAR-10 python batch: a dict with data (uint8 [N, 3072]), labels (N ints "
                "0..9), batch_label and filenames")


@dataclass(eq=False)
class CifarData:
    """The three parts, as `MnistData`, plus the class names from batches.meta. Each part is an
    `ImageSet`: images uint8 [N,3,32,32] (R, G, B; not normalised), labels int64 [N]; `raw` is
    `images`; `indices` count the part's images in its files' order (train: data_batch_1 rows
    0..9,999, then data_batch_2 from 10,000, ...)."""

    train: ImageSet
    dev: ImageSet
    test: ImageSet
    source: str
    split: str
    classes: tuple

    def part(self, name: str) -> ImageSet:
        if name not in PART_FILES:
            raise UserError(f"unknown data part {name!r}: expected train, dev or test")
        return getattr(self, name)

    @property
    def sizes(self) -> dict:
        return {name: len(self.part(name)) for name in PART_FILES}

    def describe(self) -> str:
        """"CIFAR-10 (cifar10:PATH): train 40,000 / dev 10,000 / test 10,000 images, 10 classes"."""
        sizes = " / ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        return f"CIFAR-10 ({self.source}): {sizes} images, {len(self.classes)} classes"


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD,
              dtype=torch.float32) -> torch.Tensor:
    """uint8 images [B,3,H,W] -> `dtype` (x / 255 - mean) / std, per channel, on their own device.

    The notebook's ToTensor + Normalize(CIFAR10_MEAN, CIFAR10_LAB_STD) for a whole batch at once;
    the memory format (channels-last or not) is kept. mean/std may be tensors already on the
    device (`cnnlab.train.batches` keeps them there: no host-to-device copy per batch)."""
    mean = torch.as_tensor(mean, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    x = images.to(dtype).div_(255)
    return x.sub_(mean).div_(std)


def channel_stats(images: torch.Tensor) -> dict:
    """uint8 images [N,3,H,W] -> per-channel "mean", "std" (of all pixels: CIFAR10_STD on the
    50,000 training images) and "mean_image_std" (each image's own std, averaged: how the
    notebook's CIFAR10_LAB_STD was computed), pixels scaled to [0, 1]. float64 throughout."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq, image_std = total.clone(), []
    for chunk in images.split(10_000):  # float64 copies of 10,000 images at a time (250 MB)
        x = chunk.to(torch.float64).div_(255).flatten(2)  # [n, 3, H*W]
        total += x.sum(dim=(0, 2))
        total_sq += x.square().sum(dim=(0, 2))
        image_std.append(x.std(dim=2, correction=0))  # [n, 3]
    count = images.shape[0] * images[0, 0].numel()
    mean = total / count
    std = (total_sq / count - mean.square()).sqrt()
    return {"mean": tuple(mean.tolist()), "std": tuple(std.tolist()),
            "mean_image_std": tuple(torch.cat(image_std).mean(dim=0).tolist())}


def load_cifar10(source, split: str = "lab") -> CifarData:
    """Read, check and split CIFAR-10 (see the module docstring) -> CifarData(train, dev, test).

    source: a path (str or Path) or "cifar10:PATH". The result is cached: treat it as read-only.
    Raises UserError naming the file and the fault for anything missing, damaged or unsafe."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    path = source_path(source)
    kind, where = locate(path)
    if kind == "folder":
        key = tuple(file_key(where / name) for name in FILES)
    else:
        key = file_key(where)
    sets, classes = _load_cached(kind, str(where), key)
    return CifarData(*sets, source=f"cifar10:{path}", split=split, classes=classes)


def read_class_names(source) -> tuple:
    """The 10 class names in batches.meta of a CIFAR-10 source (only that file is read, or the
    archive scanned for it) -> ('airplane', ..., 'truck'); UserError if it cannot be read."""
    kind, where = locate(source_path(source))
    if kind == "folder":
        meta = where / META_FILE
        try:
            data = meta.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {meta}: {err.strerror or err}") from None
        return read_meta(data, meta)[0]
    return read_meta(_read_archive(where, (META_FILE,), early=True)[META_FILE],
                     f"{where}:{FOLDER}/{META_FILE}")[0]


def source_path(source) -> Path:
    """"cifar10:PATH", a str or a Path -> the Path."""
    text = str(source)
    return Path(text[len("cifar10:"):] if text.startswith("cifar10:") else text).expanduser()


def locate(path: Path) -> tuple[str, Path]:
    """("folder", the folder holding the batches) or ("archive", the .tar.gz) for a source path."""
    if path.is_file():
        return "archive", path
    if not path.is_dir():
        raise UserError(f"cifar10:{path}: not found; expected {EXPECTED}")
    if (path / FOLDER).is_dir():
        return "folder", path / FOLDER
    if any((path / name).exists() for name in FILES):
        return "folder", path
    if (path / ARCHIVE).is_file():
        return "archive", path / ARCHIVE
    raise UserError(f"cifar10:{path}: no {FOLDER}/, CIFAR-10 batches or {ARCHIVE} in it; "
                    f"expected {EXPECTED}")


@functools.lru_cache(maxsize=2)  # 184 MB each
def _load_cached(kind, where, key):
    where = Path(where)
    blobs = _read_folder(where) if kind == "folder" else _read_archive(where)
    name_of = (lambda f: where / f) if kind == "folder" else (lambda f: f"{where}:{FOLDER}/{f}")
    classes, per_batch = read_meta(blobs.pop(META_FILE), name_of(META_FILE))
    sets = []
    for files in PART_FILES.values():
        arrays = [read_batch(blobs.pop(f), name_of(f), per_batch) for f in files]
        images = np.concatenate([a for a, _ in arrays]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([y for _, y in arrays])
        images = torch.from_numpy(images)
        sets.append(ImageSet(images, torch.from_numpy(labels), images, np.arange(len(labels))))
    return sets, classes


def _read_folder(folder: Path) -> dict[str, bytes]:
    blobs = {}
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path}: not found; {FOLDER}/ must hold {', '.join(FILES)} "
                            "(get them with `cnnlab data fetch cifar10`)")
        try:
            blobs[name] = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    return blobs


def _read_archive(path: Path, files=FILES, early: bool = False) -> dict[str, bytes]:
    """The batches as bytes, read from the tar in one pass; links and special members refused.
    early: stop once `files` are read (the whole archive is read otherwise, so that a
    truncated download is noticed)."""
    wanted = {f"{FOLDER}/{name}": name for name in files}
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    continue
                if not member.isfile():
                    raise UserError(f"{path}: member {member.name} is a link or special file, "
                                    "not a batch; this is not the official archive")
                blobs[name] = tar.extractfile(member).read()
                if early and len(blobs) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise UserError(f"{path}: cannot read the archive ({one_line(err)}): "
                        "truncated or not a tar.gz; download it again with "
                        "`cnnlab data fetch cifar10`") from None
    missing = [f"{FOLDER}/{n}" for n in files if n not in blobs]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} in the archive; expected {ARCHIVE} "
                        "(get it with `cnnlab data fetch cifar10`)")
    return blobs


def one_line(err: BaseException) -> str:
    """"Type: message" on one line (tarfile's errors list each method it tried on a line)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def unpickle(data: bytes, where) -> dict:
    """A CIFAR-10 pickle -> its dict with str keys; nothing in the file is ever run."""
    try:
        obj = safe_load(data, CIFAR10_BATCH)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{where}: {err}") from None
    except READ_ERRORS as err:
        raise UserError(f"{where} is not {BATCH_FORMAT} (empty, truncated or not a pickle): "
                        f"{type(err).__name__}: {err}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} holds a {type(obj).__name__}, not the dict of {BATCH_FORMAT}")
    # Loaded as latin-1 the py2 keys are str; a file re-saved with encoding="bytes" has bytes.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _entry(obj: dict, key: str, where, what: str):
    if key not in obj:
        hint = " (this looks like CIFAR-100)" if "fine_labels" in obj else ""
        keys = ", ".join(map(str, obj)) or "none"
        raise UserError(f"{where}: no '{key}' entry (keys: {keys}){hint}; expected {what}")
    return obj[key]


def read_meta(data: bytes, where) -> tuple[tuple, int]:
    """batches.meta -> (the 10 class names, images per batch)."""
    what = "batches.meta: label_names (10 names), num_cases_per_batch, num_vis 3072"
    meta = unpickle(data, where)
    names = _entry(meta, "label_names", where, what)
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names] \
        if isinstance(names, (list, tuple)) else names
    if not (isinstance(names, list) and len(names) == NUM_CLASSES
            and all(isinstance(n, str) and n for n in names)):
        raise UserError(f"{where}: label_names must be {NUM_CLASSES} names, got {names!r:.80}")
    per_batch = _entry(meta, "num_cases_per_batch", where, what)
    num_vis = _entry(meta, "num_vis", where, what)
    if not (_is_int(per_batch) and per_batch > 0) or num_vis != PIXELS:
        raise UserError(f"{where}: num_cases_per_batch {per_batch!r} / num_vis {num_vis!r}; "
                        f"expected a positive count and {PIXELS} (3 x 32 x 32)")
    return tuple(names), int(per_batch)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def read_batch(data: bytes, where, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """A data/test batch -> (uint8 [N, 3072], int64 [N]) after checking everything."""
    batch = unpickle(data, where)
    images = _entry(batch, "data", where, BATCH_FORMAT)
    labels = _entry(batch, "labels", where, BATCH_FORMAT)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == PIXELS):
        got = (f"{images.dtype} {list(images.shape)}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise UserError(f"{where}: data is {got}; expected uint8 [N, {PIXELS}] "
                        "(the R, G, B planes of 32x32 pixels)")
    if not (isinstance(labels, (list, tuple, np.ndarray)) and all(_is_int(y) for y in labels)):
        raise UserError(f"{where}: labels must be a list of integers 0..9, got "
                        f"{type(labels).__name__} {str(labels)[:60]}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise UserError(f"{where}: {len(labels)} labels for {len(images)} images")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise UserError(f"{where}: label {labels[bad[0]]} at position {bad[0]} is out of range "
                        f"({bad.size} such); CIFAR-10 labels are 0..{NUM_CLASSES - 1}")
    if len(images) != per_batch:
        raise UserError(f"{where}: {len(images):,} images, but batches.meta says "
                        f"{per_batch:,} per batch; a truncated or mixed-up batch")
    return images, labels
