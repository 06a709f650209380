"""Names of the data sources, importable without torch (the CLI builds its --help from them).

`load_data` (data/load.py) picks the loader by kind; this module imports no loader."""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import UserError

SOURCE_HELP = ("bundled, idx:DIR (MNIST IDX files), nndl-json:FILE (the lab's mnist.json.gz) or "
               "cifar10:PATH (CIFAR-10 python batches: a folder or cifar-10-python.tar.gz)")

_PATH_KINDS = ("idx", "nndl-json", "cifar10")


def parse_source(source) -> tuple[str, Path | None]:
    """"bundled" | "idx:DIR" | "nndl-json:FILE" | "cifar10:PATH" -> (kind, Path or None)."""
    source = str(source)
    if source == "bundled":
        return "bundled", None
    for kind in _PATH_KINDS:
        if source.startswith(kind + ":") and len(source) > len(kind) + 1:
            return kind, Path(source[len(kind) + 1:]).expanduser()
    raise UserError(f"unknown data source {source!r}: expected {SOURCE_HELP}")


def file_key(path: Path):
    """(resolved path, size, mtime) of a file: a cache key that changes when the file does."""
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)
