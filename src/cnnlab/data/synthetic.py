"""Synthetic CIFAR-10 written the way the official files are: for tests, benchmarks and a GPU
machine without the real set (`benchmarks/gpu.py`).

The official batches were written by Python 2 `cPickle.dump(batch, f, 2)` with numpy 1.x, so
`Py2Pickler` emits that opcode stream by hand: protocol 2, py2 `str` keys and payloads as
SHORT_BINSTRING / BINSTRING (not Python 3's BINUNICODE or `_codecs.encode` bytes), ints as
BININT1/BININT2, lists with APPENDS and dicts with SETITEMS in batches of 1000, memo BINPUTs, and
each array as `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')` + BUILD with the
state (1, shape, dtype, False, raw data as a py2 str), the dtype as `numpy.dtype('u1', 0, 1)` +
BUILD (3, '|', None, None, None, -1, -1, 0). Python 3's `pickle.loads` with its default ASCII
encoding therefore fails on them, as on the real files.

The images are learnable: each class has its own colour and stripe direction, plus noise, so a
short CPU training moves well above chance.

    from cnnlab.data.synthetic import write_cifar10
    ds = write_cifar10(tmp_path, per_batch=20, archive=True)
    ds.root          # tmp_path: holds cifar-10-batches-py/ (and cifar-10-python.tar.gz)
    ds.folder, ds.archive, ds.batches["data_batch_1"]  # (uint8 [N,3072], labels [N])
"""

from __future__ import annotations

import io
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
BATCH_SIZE = 1000  # cPickle's items per APPENDS / SETITEMS


class Py2Str(bytes):
    """A Python 2 `str` (a byte string): written as SHORT_BINSTRING / BINSTRING."""


@dataclass
class Global:
    module: str
    name: str


@dataclass
class Reduce:
    """callable(*args), then BUILD with state when it is not None (what __reduce__ returns)."""
    func: Global
    args: tuple
    state: object = None


class Py2Pickler:
    """cPickle protocol 2 as Python 2 wrote it, for the object kinds the CIFAR files hold."""

    def __init__(self):
        self.out = io.BytesIO()
        self.memo = 0  # cPickle numbers its memo from 1

    def dumps(self, obj) -> bytes:
        self.out.write(b"\x80\x02")  # PROTO 2
        self.save(obj)
        self.out.write(b".")  # STOP
        return self.out.getvalue()

    def put(self):
        self.memo += 1
        if self.memo < 256:
            self.out.write(b"q" + bytes([self.memo]))  # BINPUT
        else:
            self.out.write(b"r" + struct.pack("<I", self.memo))  # LONG_BINPUT

    def save(self, obj, memo=True):
        w = self.out.write
        if obj is None:
            w(b"N")
        elif obj is True or obj is False:
            w(b"\x88" if obj else b"\x89")  # NEWTRUE / NEWFALSE
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                w(b"K" + bytes([obj]))  # BININT1
            elif 0 <= obj < 65536:
                w(b"M" + struct.pack("<H", obj))  # BININT2
            else:
                w(b"J" + struct.pack("<i", obj))  # BININT
        elif isinstance(obj, Py2Str):
            if len(obj) < 256:
                w(b"U" + bytes([len(obj)]) + obj)  # SHORT_BINSTRING
            else:
                w(b"T" + struct.pack("<i", len(obj)) + obj)  # BINSTRING
            if memo:
                self.put()
        elif isinstance(obj, tuple):
            # Temporary tuples (refcount 1) are not memoized by cPickle.
            if not obj:
                w(b")")  # EMPTY_TUPLE
                return
            if len(obj) > 3:
                w(b"(")  # MARK
            for item in obj:
                self.save(item, memo=False)
            w(b"t" if len(obj) > 3 else b"\x85\x86\x87"[len(obj) - 1:len(obj)])  # TUPLE(1|2|3)
        elif isinstance(obj, list):
            w(b"]")  # EMPTY_LIST
            self.put()
            self._batched(obj, lambda x: self.save(x), b"a", b"e")  # APPEND / APPENDS
        elif isinstance(obj, dict):
            w(b"}")  # EMPTY_DICT
            self.put()
            items = list(obj.items())
            self._batched(items, lambda kv: (self.save(kv[0]), self.save(kv[1])), b"s", b"u")
        elif isinstance(obj, Global):
            w(b"c" + f"{obj.module}\n{obj.name}\n".encode())  # GLOBAL
            self.put()
        elif isinstance(obj, Reduce):
            self.save(obj.func)
            self.save(obj.args, memo=False)
            w(b"R")  # REDUCE
            self.put()
            if obj.state is not None:
                self.save(obj.state, memo=False)
                w(b"b")  # BUILD
        else:
            raise TypeError(f"no Python 2 pickling for {type(obj).__name__}")

    def _batched(self, items, save_one, one, many):
        for start in range(0, len(items), BATCH_SIZE):
            chunk = items[start:start + BATCH_SIZE]
            if len(chunk) == 1:
                save_one(chunk[0])
                self.out.write(one)
                continue
            self.out.write(b"(")  # MARK
            for item in chunk:
                save_one(item)
            self.out.write(many)


def py2_array(a: np.ndarray) -> Reduce:
    """numpy 1.x's ndarray.__reduce__ under Python 2, for a C-contiguous uint8 array."""
    assert a.dtype == np.uint8
    dtype = Reduce(Global("numpy", "dtype"), (Py2Str(b"u1"), 0, 1),
                   (3, Py2Str(b"|"), None, None, None, -1, -1, 0))
    state = (1, tuple(a.shape), dtype, False, Py2Str(np.ascontiguousarray(a).tobytes()))
    return Reduce(Global("numpy.core.multiarray", "_reconstruct"),
                  (Global("numpy", "ndarray"), (0,), Py2Str(b"b")), state)


def py2_dumps(obj) -> bytes:
    """A dict/list/str/int/ndarray structure as Python 2 cPickle protocol 2 wrote it."""
    return Py2Pickler().dumps(_convert(obj))


def _convert(obj):
    if isinstance(obj, np.ndarray):
        return py2_array(obj)
    if isinstance(obj, str):
        return Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_convert(k): _convert(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(x) for x in obj)
    return obj


# ------------------------------------------------------------------------------ the images
PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 210, 30], [200, 40, 200],
                    [30, 200, 210], [240, 140, 20], [120, 70, 20], [150, 150, 150],
                    [20, 20, 20]], dtype=np.float64)


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n learnable images -> (uint8 [n, 3072] as R, G, B planes, int64 labels, balanced).

    Class c: its own colour (PALETTE[c]) on stripes whose direction and period depend on c,
    plus per-image brightness and per-pixel noise."""
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.arange(n) % 10)
    yy, xx = np.mgrid[0:32, 0:32]
    angle = np.pi * np.arange(10) / 10
    period = 4 + (np.arange(10) % 3) * 2
    phase = (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * phase / period[:, None, None]))  # [10,32,32]
    base = PALETTE[labels][:, :, None, None] * (0.4 + 0.6 * stripes[labels][:, None])
    noise = rng.normal(0, 25, size=(n, 3, 32, 32)) + rng.uniform(-30, 30, size=(n, 1, 1, 1))
    images = np.clip(base + noise, 0, 255).astype(np.uint8)
    return images.reshape(n, 3 * 32 * 32), labels.astype(np.int64)


# ------------------------------------------------------------------------------ the files
def batch_dict(data: np.ndarray, labels, batch_label: str, seed: int = 0) -> dict:
    """The dict of an official batch, keys in the order the real files hold them."""
    names = [f"{CLASSES[y % 10]}_s_{seed * 100000 + i:06d}.png" for i, y in enumerate(labels)]
    return {"batch_label": batch_label, "labels": [int(y) for y in labels], "data": data,
            "filenames": names}


def meta_dict(per_batch: int) -> dict:
    return {"num_cases_per_batch": per_batch, "label_names": list(CLASSES), "num_vis": 3072}


@dataclass
class SyntheticCifar:
    root: Path                      # holds FOLDER (and ARCHIVE when written)
    folder: Path
    archive: Path | None
    batches: dict = field(repr=False)  # file name -> (uint8 [N,3072], int64 [N])


def write_cifar10(root, per_batch: int = 20, seed: int = 0, archive: bool = False,
                  folder: bool = True, compresslevel: int = 9) -> SyntheticCifar:
    """Write the seven official files (per_batch images in each batch) under root/FOLDER, and
    root/ARCHIVE (members FOLDER/...) when `archive`; folder=False keeps only the archive.
    per_batch=10_000 gives the official sizes (50,000 + 10,000 images, 184 MB)."""
    root = Path(root)
    files, batches = {"batches.meta": py2_dumps(meta_dict(per_batch))}, {}
    for i, name in enumerate(TRAIN + ["test_batch"]):
        data, labels = make_images(per_batch, seed * 10 + i)
        batches[name] = (data, labels)
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {i + 1} of 5"
        files[name] = py2_dumps(batch_dict(data, labels, label, seed * 10 + i))
    out = root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (out / name).write_bytes(blob)
    (out / "readme.html").write_text("<html>synthetic CIFAR-10 for tests</html>\n")
    path = write_archive(out, root / ARCHIVE, compresslevel=compresslevel) if archive else None
    if not folder:
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    return SyntheticCifar(root, out, path, batches)


def write_archive(folder: Path, path: Path, extra=(), compresslevel: int = 9) -> Path:
    """A .tar.gz of `folder` with members FOLDER/NAME, as the official archive; `extra` adds
    (tarfile.TarInfo, bytes or None) members after them (for the unsafe-archive tests)."""
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        tar.add(folder, arcname=FOLDER)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path
