"""Shared by the `cnnlab explore` tests: small checkpoints, the server as a subprocess, images."""

from __future__ import annotations

import atexit
import io
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoints(folder: Path) -> dict:
    """{"lenet": a LeNet trained 40 steps on the bundled images (lab init), "resnet18": random
    weights, "rgb": a 3-channel LeNet with random weights} as cnnlab checkpoints."""
    import torch.nn.functional as F

    from cnnlab.data import load_mnist
    from cnnlab.models import build_model
    from cnnlab.train.checkpoint import model_payload, save_checkpoint
    from cnnlab.train.init import lab_init_

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lenet = lab_init_(build_model("lenet"), "lenet")
    train = load_mnist("bundled", "lab").train
    opt = torch.optim.SGD(lenet.parameters(), lr=0.1)
    for step in range(40):
        idx = torch.arange(step * 25, step * 25 + 25) % len(train)
        loss = F.cross_entropy(lenet(train.images[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    config = {"data": "bundled", "split": "lab"}
    paths = {"lenet": folder / "lenet" / "best.pt", "resnet18": folder / "resnet18.pt",
             "rgb": folder / "rgb.pt"}
    save_checkpoint(paths["lenet"], model_payload("lenet", {"in_channels": 1}, lenet, config=config))
    resnet = build_model("resnet18").eval()
    save_checkpoint(paths["resnet18"], model_payload("resnet18", {"in_channels": 1}, resnet,
                                                     config=config))
    rgb = build_model("lenet", in_channels=3).eval()
    save_checkpoint(paths["rgb"], model_payload("lenet", {"in_channels": 3}, rgb, config=config))
    return paths


_SHARED = {}


def shared_server() -> tuple[ServerProcess, dict]:
    """One server for all explore tests of this pytest process (stopped when it exits):
    `cnnlab explore --port 0 --no-browser LENET RESNET18 RGB` -> (server, checkpoint paths)."""
    if "server" not in _SHARED:
        folder = Path(tempfile.mkdtemp(prefix="cnnlab-explore-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        paths = make_checkpoints(folder)
        server = ServerProcess(paths["lenet"], paths["resnet18"], paths["rgb"])
        atexit.register(server.close)
        server.wait_for("models:", timeout=60)
        _SHARED.update(server=server, paths=paths)
    return _SHARED["server"], _SHARED["paths"]


def digit_png(size=280, seed=None) -> bytes:
    """A white '7'-like stroke on black, as the page's canvas sends it."""
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    k = size / 28
    d.line([(6 * k, 6 * k), (22 * k, 6 * k), (12 * k, 23 * k)], fill=255, width=int(2.4 * k))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class ServerProcess:
    """`cnnlab explore --port 0 --no-browser ARGS` in a subprocess; `.url` from its first line."""

    def __init__(self, *args, cwd=None, timeout=60, env=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.cli", "explore", "--port", "0", "--no-browser",
             *map(str, args)], cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        for stream, put in ((self.proc.stdout, self.lines.put), (self.proc.stderr, self.stderr.append)):
            threading.Thread(target=self._pump, args=(stream, put), daemon=True).start()
        self.first_line = self.next_line(timeout)
        self.url = self.first_line.strip()
        if not self.url.startswith("http://"):
            self.close()
            raise AssertionError(f"first line is not a URL: {self.first_line!r}; "
                                 f"stderr: {self.stderr}")
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def next_line(self, timeout=30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                return self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.2)  # let the stderr pump finish
                    raise AssertionError(f"the server exited ({self.proc.returncode}): "
                                         f"{''.join(self.stderr)}") from None
        raise AssertionError(f"no output within {timeout} s; stderr: {''.join(self.stderr)}")

    def wait_for(self, text, timeout=60) -> list[str]:
        """Lines printed until one containing `text` (inclusive)."""
        seen, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.next_line(max(0.1, end - time.monotonic()))
            seen.append(line)
            if text in line:
                return seen
        raise AssertionError(f"{text!r} not printed within {timeout} s; got {seen}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    """The shared server (a fixture: import it into a test module)."""
    return shared_server()[0]


@pytest.fixture(scope="module")
def ckpts() -> dict:
    """The shared server's checkpoint paths: lenet, resnet18, rgb."""
    return shared_server()[1]
