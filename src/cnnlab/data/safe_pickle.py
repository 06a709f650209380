"""Unpickling numpy arrays without trusting the file: Paddle `.pdparams`, CIFAR-10 batches.

A pickle can name any importable callable and call it (`os.system`, `builtins.eval`, ...), so
`pickle.load` on a file from someone else runs their code. The files read here hold only numpy
arrays, dtypes, numbers, strings and plain containers, so the unpickler below maps the handful of
globals each format uses (its `PickleFormat.allowed`) to fixed objects and refuses every other
global before anything is called. It never imports a module by a name found in the file.

- `PDPARAMS`: `paddle.save(layer.state_dict(), path)` (protocol 2-4): arrays, dtypes, scalars,
  OrderedDict, and Python 3's way of pickling bytes (`_codecs.encode`, `bytes()`).
- `CIFAR10_BATCH`: the official CIFAR-10 python batches, Python 2 cPickle protocol 2: only
  `numpy.core.multiarray._reconstruct`, `numpy.ndarray` and `numpy.dtype`; py2 `str` keys and
  payloads are opcodes, not globals, and `encoding="latin1"` turns them into `str` (as
  torchvision reads them) while numpy takes the latin-1 text back as the array's bytes.

The writer does the reverse and names numpy's helpers by their numpy 1.x path
(`numpy.core.multiarray._reconstruct`), which numpy 1.x and 2.x both load; the 2.x default path
(`numpy._core...`) does not exist in the numpy 1.x of older Paddle installs.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from dataclasses import dataclass, field

import numpy as np

from cnnlab.errors import UserError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class UnsafePickleError(UserError):
    """The pickle asks for a global its format never needs; nothing was executed."""


def _reconstruct(subtype, shape, dtype):
    # numpy's helper builds an empty array of `subtype`; only plain ndarrays are allowed here.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to build an array of type {subtype!r}")
    # ndarray.__reduce__ always writes shape (0,) and lets BUILD set the real shape with the
    # data; another shape would only make numpy allocate memory the file never fills.
    if not (isinstance(shape, tuple) and shape == (0,)):
        raise pickle.UnpicklingError(f"refusing to preallocate an array of shape {shape!r}")
    return _multiarray._reconstruct(subtype, shape, dtype)


def _encode(text="", encoding="latin1", errors="strict"):
    # Protocol 2 pickles (Python 3) store bytes as `_codecs.encode(str, "latin1")`.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


def _bytes(*args):
    # Protocol 2 pickles write b"" as `bytes()`; never allow `bytes(n)` (an n-byte allocation).
    if args and not isinstance(args[0], (str, bytes, list, tuple)):
        raise pickle.UnpicklingError("refusing bytes() of a non-sequence")
    return bytes(*args)


@dataclass(frozen=True)
class PickleFormat:
    """What a kind of file may unpickle: `allowed` maps (module, name) as written in the file to
    the object used instead; every other global is refused. `name` and `holds` go into errors."""

    name: str      # "a .pdparams file"
    holds: str     # "only numpy arrays"
    allowed: dict = field(repr=False)


_NUMPY_ARRAY = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# (module, name) as it appears in the file -> the object used instead. Nothing else is allowed.
_PDPARAMS_ALLOWED = {
    **_NUMPY_ARRAY,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("collections", "OrderedDict"): dict,  # order is kept by plain dicts
    ("_codecs", "encode"): _encode,
    ("builtins", "bytes"): _bytes,
    ("__builtin__", "bytes"): _bytes,
}

PDPARAMS = PickleFormat("a .pdparams file", "only numpy arrays", _PDPARAMS_ALLOWED)
# The official files were written by numpy 1.x under Python 2: numpy.core, never numpy._core.
CIFAR10_BATCH = PickleFormat(
    "a CIFAR-10 batch", "only a numpy uint8 array, numbers and strings",
    {k: v for k, v in _NUMPY_ARRAY.items() if k[0] != "numpy._core.multiarray"})


# What a damaged (not a malicious) pickle raises while it is read: truncated, garbage, odd opcodes.
READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
               KeyError, struct.error, UnicodeDecodeError, MemoryError, RecursionError)


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the globals `fmt.allowed` lists (module docstring)."""

    def __init__(self, file, fmt: PickleFormat = PDPARAMS, **kwargs):
        super().__init__(file, **kwargs)
        self.fmt = fmt

    def find_class(self, module, name):
        try:
            return self.fmt.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing the global `{module}.{name}`: {self.fmt.name} holds {self.fmt.holds}, "
                "so this pickle tries to run other code; nothing was executed"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent ids are not used in {self.fmt.name}")


def safe_load(data: bytes, fmt: PickleFormat = PDPARAMS):
    """Unpickle `data` allowing only the globals of `fmt` (numpy arrays, dtypes, ...) and plain
    containers, numbers and strings.

    Raises `UnsafePickleError` for any other global; other pickle errors pass through."""
    # latin1: Python 2 pickles (old Paddle, CIFAR-10) store numpy buffers as byte strings.
    return RestrictedUnpickler(io.BytesIO(data), fmt, encoding="latin1").load()


# Written by name, not by the function's own __module__ (see the module docstring).
_WRITE_NAMES = {
    id(_multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
    id(np.ndarray): ("numpy", "ndarray"),
    id(np.dtype): ("numpy", "dtype"),
}


class _PdparamsPickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    def save_global(self, obj, name=None):
        alias = _WRITE_NAMES.get(id(obj))
        if alias is None:
            raise pickle.PicklingError(f"a .pdparams file holds only numpy arrays, not {obj!r}")
        module, qualname = alias
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
        self.memoize(obj)


def dumps_arrays(obj: dict, protocol: int = 4) -> bytes:
    """Pickle a dict of numpy arrays (and a dict of strings) as `paddle.save` does (protocol 4)."""
    if protocol not in (2, 3, 4):
        raise ValueError(f"paddle.save writes pickle protocol 2, 3 or 4, got {protocol}")
    buf = io.BytesIO()
    _PdparamsPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()
