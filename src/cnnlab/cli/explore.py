"""`cnnlab explore [CKPT ...]`: serve the interactive page (draw a digit, watch every layer)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
import time
from pathlib import Path

from cnnlab.errors import UserError

FALLBACK_DIR = "runs/explore-lenet"
FALLBACK_SPLIT = "full"  # 4,000 / 500 / 500 of the bundled images
FALLBACK_EPOCHS = 3      # LeNet: about 0.94 test accuracy in a few seconds

EPILOG = """\
The first line printed is the page's URL. Without CKPT the newest runs/*/best.pt (under the
current directory) is used; if there is none, a LeNet is trained on the 5,000 bundled MNIST
images (split "full", 3 epochs, a few seconds) into runs/explore-lenet/ first.

The server binds 127.0.0.1 and answers only requests addressed to it (Host header) and coming
from its own page (Origin); --host 0.0.0.0 serves every network interface: anyone who can reach
this machine can then use the page. JSON API: GET /api/models, POST /api/predict?model=NAME with
an image file as the body (see the README).
"""


def register(sub):
    p = sub.add_parser("explore", help="interactive page: draw a digit, watch every layer compute",
                       description="Serve a local page where you draw a digit (or upload an "
                                   "image) and see each layer's feature maps, the prediction, "
                                   "and formula 5.13 with real numbers for any conv pixel.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", metavar="CKPT", nargs="*",
                   help="cnnlab checkpoints to show side by side (default: newest runs/*/best.pt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind: an IP address or localhost (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for inference (default: torch's, the machine's cores)")
    p.set_defaults(func=run)


def newest_best(root: str | Path = "runs") -> Path | None:
    """The most recently modified runs/*/best.pt, or None."""
    found = [p for p in Path(root).glob("*/best.pt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train_fallback(out: str | Path = FALLBACK_DIR) -> dict:
    """Train the lab's LeNet on the bundled images into `out` -> train_run's results."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.run import train_run

    config = TrainConfig(model="lenet", split=FALLBACK_SPLIT, epochs=FALLBACK_EPOCHS, out=str(out),
                         quiet=True, log_steps=0, eval_steps=20)
    return train_run(config)


def model_key(path: Path, taken) -> str:
    """A short unique name for a checkpoint: its run folder for best.pt/last.pt, else its stem."""
    base = path.parent.name if path.name in ("best.pt", "last.pt") and path.parent.name else path.stem
    key, n = base or "model", 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    return key


def load_explorers(paths) -> dict:
    """Checkpoint paths -> {key: Explorer}; a missing, corrupt or foreign file is a UserError."""
    from cnnlab.cli.evaluate import load_checkpoint_model
    from cnnlab.explore.inference import Explorer
    from cnnlab.interop.paddle import is_pdparams

    explorers = {}
    for raw in paths:
        path = Path(raw)
        if is_pdparams(path):
            raise UserError(f"{path} is a Paddle .pdparams file: convert it first with "
                            f"`cnnlab convert-paddle {path} --model NAME --out FILE.pt`")
        model, payload = load_checkpoint_model(path, device="cpu")
        key = model_key(path, explorers)
        explorers[key] = Explorer(key, model, payload, source=str(path))
    return explorers


def _check_address(host: str, port: int):
    if not 0 <= port <= 65535:
        raise UserError(f"--port must lie in 0..65535 (0: any free port), got {port}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UserError(f"--host must be an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1) or "
                            f"localhost, got {host!r}") from None


def start(args):
    """Load the models, bind, print the URL (first line), train a LeNet if there is nothing to
    show -> the bound ExploreServer with its models, not yet serving."""
    import torch

    from cnnlab.explore.server import ExploreServer

    _check_address(args.host, args.port)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    paths = list(args.checkpoints)
    found = None
    if not paths:
        found = newest_best()
        paths = [found] if found else []
    explorers = load_explorers(paths)  # a bad checkpoint fails before anything is printed
    try:
        server = ExploreServer(args.host, args.port)
    except OSError as err:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}"
                        + ("; try --port 0 for any free port" if args.port else "")) from err
    print(server.url, flush=True)  # the first line: scripts and tests read it
    if args.host != "localhost" and not ipaddress.ip_address(args.host).is_loopback:
        where = ("every network interface" if ipaddress.ip_address(args.host).is_unspecified
                 else "a network address")
        print(f"cnnlab explore: warning: serving on {where} ({args.host}): anyone who can reach "
              "this machine can use the page", file=sys.stderr, flush=True)
    if found is not None:
        print(f"no checkpoint given: using the newest {found}", flush=True)
    if not paths:
        print(f"no checkpoint given and no runs/*/best.pt here: training a LeNet on the 5,000 "
              f"bundled MNIST images ({FALLBACK_EPOCHS} epochs, a few seconds) into "
              f"{FALLBACK_DIR}/ ...", flush=True)
        t0 = time.perf_counter()
        try:
            results = train_fallback()
        except BaseException:
            server.server_close()
            raise
        print(f"trained in {time.perf_counter() - t0:.1f} s: test accuracy {results['test_acc']:.3f} "
              f"on {results['test_n']} images", flush=True)
        explorers = load_explorers([Path(FALLBACK_DIR) / "best.pt"])
    server.explorers = explorers
    print("models: " + ", ".join(f"{k} ({e.arch}, {e.source})" for k, e in explorers.items()),
          flush=True)
    return server


def run(args) -> int:
    server = start(args)
    if not args.no_browser:
        import webbrowser
        threading.Timer(0.3, webbrowser.open, (server.url,)).start()
    print("serving; press Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0
