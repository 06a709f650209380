"""`cnnlab data fetch cifar10`: served by a local HTTP server on 127.0.0.1, never the network.

Every failure must exit 2 with one line and leave --root exactly as it was (no temp file, no
half-extracted folder); a data set already there is used where it lies.
"""

from __future__ import annotations

import hashlib
import http.server
import tarfile
import threading

import pytest

from cifar_helpers import (ARCHIVE, FOLDER, batch_dict, make_images, py2_dumps, write_archive,
                           write_cifar10)
from cnnlab.cli import main
from cnnlab.data import fetch as F
from cnnlab.data import load_cifar10

N = 10  # images per batch


class Server:
    """Serves `routes[path] = (bytes, mode)`; mode "truncate" announces the full length but
    sends half and closes. Counts the requests per path."""

    def __init__(self):
        self.routes, self.hits = {}, {}
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, mode = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path, body, mode="full") -> str:
        self.routes[path] = (body, mode)
        return self.url(path)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("src"), per_batch=N, archive=True)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch(root, url, digest, capsys):
    code = main(["data", "fetch", "cifar10", "--root", str(root), "--url", url, "--md5", digest,
                 "--quiet"])
    return code, capsys.readouterr()


def one_line(captured) -> str:
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith("cnnlab data: error: ")
    return captured.err


def test_cli_defaults_match_the_library():
    from cnnlab.cli import data as cli

    assert (cli.DEFAULT_ROOT, cli.OFFICIAL_URL, cli.OFFICIAL_MD5) == \
        (F.DEFAULT_ROOT, F.OFFICIAL_URL, F.OFFICIAL_MD5)
    assert F.OFFICIAL_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert F.OFFICIAL_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_good_archive_is_downloaded_checked_and_put_in_place(tmp_path, server, synthetic,
                                                             capsys):
    blob = synthetic.archive.read_bytes()
    url = server.add("/good.tar.gz", blob)
    root = tmp_path / "data"
    code, out = fetch(root, url, md5(blob), capsys)
    assert code == 0, out.err
    assert f"--data cifar10:{root}" in out.out
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]  # no temp file, no archive
    data = load_cifar10(root)
    assert data.sizes == {"train": 4 * N, "dev": N, "test": N}
    assert data.test.images.flatten(1).numpy().tolist() == \
        synthetic.batches["test_batch"][0].tolist()


def test_an_existing_data_set_is_used_where_it_lies(tmp_path, server, synthetic, capsys,
                                                    monkeypatch):
    blob = synthetic.archive.read_bytes()
    url = server.add("/again.tar.gz", blob)
    # The archive alone (a manual download): found by its MD5, not downloaded, not extracted.
    (tmp_path / ARCHIVE).write_bytes(blob)
    code, out = fetch(tmp_path, url, md5(blob), capsys)
    assert code == 0 and "used where it lies" in out.out and str(tmp_path / ARCHIVE) in out.out
    assert server.hits.get("/again.tar.gz") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE]
    # torchvision's download (the folder): found by torchvision's per-file MD5s.
    root = synthetic.root
    code, out = fetch(root, url, md5(blob), capsys)
    assert code == 2 and "is not the official CIFAR-10" in one_line(out)  # synthetic != official
    monkeypatch.setattr(F, "FILE_MD5", {n: md5((root / FOLDER / n).read_bytes())
                                        for n in F.FILE_MD5})
    code, out = fetch(root, url, md5(blob), capsys)
    assert code == 0 and f"{root / FOLDER} (already there" in out.out
    assert server.hits.get("/again.tar.gz") is None


def test_an_archive_with_another_md5_is_not_overwritten(tmp_path, server, capsys):
    (tmp_path / ARCHIVE).write_bytes(b"something else")
    code, out = fetch(tmp_path, server.add("/x.tar.gz", b"x"), "0" * 32, capsys)
    assert code == 2 and "exists but its MD5 is" in one_line(out)
    assert (tmp_path / ARCHIVE).read_bytes() == b"something else"


def _unsafe(tmp_path, synthetic, kind):
    info = tarfile.TarInfo({"escape": f"{FOLDER}/../../escaped.txt", "absolute": "/tmp/abs.txt",
                            "symlink": f"{FOLDER}/link", "hardlink": f"{FOLDER}/hard",
                            "device": f"{FOLDER}/dev"}[kind])
    data = None
    if kind in ("escape", "absolute"):
        data = b"owned\n"
        info.size = len(data)
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, f"{FOLDER}/data_batch_1"
    else:
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return write_archive(synthetic.folder, tmp_path / f"{kind}.tar.gz", extra=[(info, data)])


@pytest.mark.parametrize("case, expected", [
    ("wrong-md5", "has MD5"),
    ("truncated", "truncated: got"),
    ("missing", "HTTP 404"),
    ("not-a-tar", "cannot be read"),
    ("escape", "refusing archive member 'cifar-10-batches-py/../../escaped.txt' (a '..'"),
    ("absolute", "refusing archive member '/tmp/abs.txt' (an absolute name)"),
    ("symlink", "(a symbolic link to '/etc/passwd')"),
    ("hardlink", "(a hard link to"),
    ("device", "(a device or FIFO)"),
    ("no-batches", "has no cifar-10-batches-py/"),
    ("bad-label", "out of range"),
])
def test_every_failure_is_one_line_and_leaves_nothing(tmp_path, server, synthetic, capsys,
                                                      case, expected):
    blob, digest, mode = synthetic.archive.read_bytes(), None, "full"
    if case == "wrong-md5":
        digest = md5(b"another file")
    elif case == "truncated":
        mode = "truncate"
    elif case == "not-a-tar":
        blob = b"<html>not found</html>"
    elif case in ("escape", "absolute", "symlink", "hardlink", "device"):
        blob = _unsafe(tmp_path, synthetic, case).read_bytes()
    elif case == "no-batches":
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "README").write_text("hi")
        with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "other", arcname="other")
        blob = (tmp_path / "other.tar.gz").read_bytes()
    elif case == "bad-label":
        bad = write_cifar10(tmp_path / "bad", per_batch=N, archive=True)
        x, _ = make_images(N, 0)
        (bad.folder / "data_batch_2").write_bytes(py2_dumps(batch_dict(x, [11] * N, "b")))
        blob = write_archive(bad.folder, tmp_path / "bad.tar.gz").read_bytes()
    url = server.url("/missing") if case == "missing" else server.add(f"/{case}", blob, mode)
    root = tmp_path / "root"
    code, out = fetch(root, url, digest or md5(blob), capsys)
    assert code == 2
    assert expected in one_line(out)
    assert not root.exists()  # nothing half-written: not even the folder this call made
    assert not (tmp_path / "escaped.txt").exists()


def test_ctrl_c_during_download_or_extraction_leaves_nothing(tmp_path, server, synthetic,
                                                             capsys, monkeypatch):
    blob = synthetic.archive.read_bytes()
    url = server.add("/slow.tar.gz", blob)
    (tmp_path / "_check_extracted").mkdir()  # a --root of the user's: kept, with its files
    (tmp_path / "_check_extracted" / "notes.txt").write_text("mine")
    for target in ("_write", "_check_extracted"):
        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt
        with monkeypatch.context() as m:
            m.setattr(F, target, interrupt)
            code, out = fetch(tmp_path / target, url, md5(blob), capsys)
        assert code == 130 and "interrupted" in out.err
    assert not (tmp_path / "_write").exists()
    assert [p.name for p in (tmp_path / "_check_extracted").iterdir()] == ["notes.txt"]


def test_bad_arguments_and_an_unreachable_server(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv, expected in (
        (["--md5", "xyz"], "--md5 must be 32 hexadecimal digits"),
        (["--url", "ftp://example.org/c.tgz"], "--url must be an http:// or https://"),
        (["--root", str(tmp_path / "file")], "is a file, not a folder"),
        (["--url", "http://127.0.0.1:9/cifar.tar.gz"], "cannot download"),
    ):
        if "--root" not in argv:
            argv = argv + ["--root", str(tmp_path / "r")]
        assert main(["data", "fetch", "cifar10", "--quiet", *argv]) == 2
        assert expected in one_line(capsys.readouterr())
    assert not (tmp_path / "r").exists()
