"""`fetch_cifar10(root)`: download the official CIFAR-10 archive so that a failure leaves nothing.

Steps, each of which must pass before the next:
1. An existing data set in `root` is used where it lies: `root/cifar-10-batches-py/` whose seven
   files have torchvision's MD5s, or `root/cifar-10-python.tar.gz` with the archive's MD5 (the
   loader reads the archive directly). Something else under those names is an error, never
   overwritten.
2. Download `url` into a temp file in `root`, with a progress bar, hashing it on the way; the
   size must be the announced Content-Length and the MD5 the expected one.
3. Check every member before extracting any: absolute names, `..` components, symbolic and hard
   links, devices, FIFOs and more than 1 GB in all are refused. Then extract into a temp folder
   (with tarfile's `filter="data"` as a second guard) and read the batches back with the loader.
4. Rename `cifar-10-batches-py/` into `root`. The archive is not kept (cnnlab reads the folder).

Any failure, Ctrl-C or SIGTERM removes the temp file and folder (and `root` when this call
created it): `root` holds the complete data set or nothing new. Errors are one-line `UserError`s that say what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import signal
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cnnlab.data.cifar10 import ARCHIVE, FILES, FOLDER, one_line
from cnnlab.errors import UserError

# The address and checksum torchvision's CIFAR10 dataset uses.
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
# torchvision's per-file MD5s of the extracted batches.
FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
DEFAULT_ROOT = "data"
MAX_EXTRACTED = 1 << 30  # the official archive unpacks to 178 MB
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class FetchResult:
    path: Path     # the folder cifar-10-batches-py or the archive, where it lies
    action: str    # "downloaded" or "found"
    data: str      # the --data value to use: "cifar10:ROOT"


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_cifar10(root=DEFAULT_ROOT, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5,
                  progress: bool = True) -> FetchResult:
    """CIFAR-10 in `root` (see the module docstring) -> where it is and the --data to use."""
    root = Path(root).expanduser()
    md5 = str(md5).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise UserError(f"--md5 must be 32 hexadecimal digits, got {md5!r}")
    if not re.match(r"https?://", url):
        raise UserError(f"--url must be an http:// or https:// address, got {url!r}")
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root} is a file, not a folder: give a folder for the data")
    data = f"cifar10:{root}"
    found = existing(root, md5)
    if found is not None:
        return FetchResult(found, "found", data)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --root {root}: {err.strerror or err}") from None
    tmp_file = tmp_dir = None
    done = False
    try:
        with _sigterm_as_interrupt():
            fd, name = tempfile.mkstemp(prefix=f".{ARCHIVE}.", suffix=".part", dir=root)
            os.close(fd)
            tmp_file = Path(name)
            download(url, tmp_file, md5, progress)
            tmp_dir = Path(tempfile.mkdtemp(prefix=".cifar-10.", suffix=".part", dir=root))
            extract(tmp_file, tmp_dir, url)
            _check_extracted(tmp_dir / FOLDER, url, md5)
            target = root / FOLDER
            if target.exists():  # appeared while we downloaded
                raise UserError(f"{target} appeared during the download: remove one and run again")
            os.rename(tmp_dir / FOLDER, target)
            done = True
    except OSError as err:
        raise UserError(f"cannot write CIFAR-10 into {root}: {err.strerror or err}; free some "
                        "space or pick another --root, then run again") from None
    finally:
        if tmp_file is not None:
            tmp_file.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not done:
            with contextlib.suppress(OSError):
                root.rmdir()  # only when still empty: --root is as it was
    return FetchResult(target, "downloaded", data)


def existing(root: Path, md5: str) -> Path | None:
    """The data set already in `root` (folder with torchvision's MD5s, or the archive with
    `md5`), None when there is none; UserError when something else has its name."""
    folder, archive = root / FOLDER, root / ARCHIVE
    if folder.exists():
        wrong = []
        for name, want in FILE_MD5.items():
            path = folder / name
            got = md5_of(path) if path.is_file() else "missing"
            if got != want:
                wrong.append(f"{name} {got}")
        if not wrong:
            return folder
        raise UserError(f"{folder} exists but is not the official CIFAR-10 ({', '.join(wrong)}; "
                        f"see FILE_MD5): move it away and run again, or use it as it is with "
                        f"--data cifar10:{root}")
    if archive.exists():
        got = md5_of(archive) if archive.is_file() else "not a file"
        if got == md5:
            return archive
        raise UserError(f"{archive} exists but its MD5 is {got}, expected {md5} (damaged or "
                        "another file): move it away and run again")
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt meanwhile, so that the clean-up runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def download(url: str, path: Path, md5: str, progress: bool = True):
    """`url` -> `path`, checking the announced size and the MD5; UserError on any failure."""
    again = "check the address and the network and run `cnnlab data fetch cifar10` again"
    h, got = hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(path, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress_bar(progress, total, url) as advance:
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    _write(out, chunk, path)
                    h.update(chunk)
                    got += len(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as err:
        raise UserError(f"cannot download {url}: HTTP {err.code} {err.reason}; {again}") from None
    except urllib.error.URLError as err:
        raise UserError(f"cannot download {url}: {err.reason}; {again}") from None
    except (OSError, http.client.HTTPException) as err:  # the connection failed midway
        if isinstance(err, OSError) and err.filename:  # opening our temp file failed
            raise
        raise UserError(f"download of {url} failed after {got:,} bytes ({one_line(err)}); "
                        f"{again}") from None
    if total is not None and got != total:
        raise UserError(f"download of {url} truncated: got {got:,} of {total:,} bytes; {again}")
    if h.hexdigest() != md5:
        raise UserError(f"{url} has MD5 {h.hexdigest()}, expected {md5}: the download is damaged "
                        f"or not the CIFAR-10 archive; nothing was kept; {again}")


def _write(out, chunk: bytes, path: Path):
    try:
        out.write(chunk)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}; free some space or pick "
                        "another --root, then run again") from None


@contextlib.contextmanager
def _progress_bar(enabled: bool, total, url: str):
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    columns = (TextColumn("CIFAR-10"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(url, total=total)
        yield lambda n: bar.advance(task, n)


def safe_members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    """Every member, checked before anything is extracted; UserError naming the first unsafe one."""
    members, total = [], 0
    for m in tar.getmembers():
        name = PurePosixPath(m.name)
        reason = None
        if m.name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", m.name):
            reason = "an absolute name"
        elif ".." in name.parts or ".." in m.name.split("\\"):
            reason = "a '..' component that leaves the folder"
        elif m.issym() or m.islnk():
            reason = f"a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}"
        elif m.ischr() or m.isblk() or m.isfifo():
            reason = "a device or FIFO"
        elif not (m.isfile() or m.isdir()):
            reason = "not a plain file or folder"
        if reason:
            raise UserError(f"{where}: refusing archive member {m.name!r} ({reason}); nothing was "
                            "extracted: this is not the official archive, check --url")
        total += m.size
        if total > MAX_EXTRACTED:
            raise UserError(f"{where}: the archive unpacks to more than {MAX_EXTRACTED:,} bytes; "
                            "nothing was extracted: this is not the official archive, check --url")
        members.append(m)
    return members


def extract(archive: Path, folder: Path, where: str):
    """Extract the checked members of `archive` into `folder` (which must exist)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = safe_members(tar, where)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (PEP 706): a second guard
                tar.extractall(folder, members=members, filter="data")
            else:  # pragma: no cover - older Pythons: the members were checked above
                tar.extractall(folder, members=members)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise UserError(f"{where}: the archive cannot be read ({one_line(err)}); "
                        "nothing was kept: check --url and run again") from None


def _check_extracted(folder: Path, where: str, md5: str):
    """The extracted batches are all there and load (the official ones also by their MD5s)."""
    missing = [n for n in FILES if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{where}: the archive has no {FOLDER}/{', '.join(missing)}; nothing "
                        "was kept: this is not the CIFAR-10 archive, check --url")
    if md5 == OFFICIAL_MD5:
        wrong = [n for n, want in FILE_MD5.items() if md5_of(folder / n) != want]
        if wrong:
            raise UserError(f"{where}: extracted {', '.join(wrong)} differ from the official "
                            "files; nothing was kept: run again")
    from cnnlab.data.cifar10 import _load_cached

    try:
        _load_cached.__wrapped__("folder", str(folder), None)  # checks every batch; not cached
    except UserError as err:
        raise UserError(f"{where}: {err}; nothing was kept: check --url") from None
