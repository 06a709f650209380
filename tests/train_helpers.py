"""Shared by the trustworthy-training tests: tiny synthetic MNIST files, running `cnnlab` in this
process or in a fresh one, and comparing two run directories bit for bit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from cnnlab.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def make_json(path, sizes=(96, 32, 32), seed=0) -> str:
    """A lab-format mnist.json (`[train, dev, test]`, each `[images, labels]`) of random digits
    whose brightness depends on the label (so a model can learn something) -> 'nndl-json:PATH'."""
    rng = np.random.RandomState(seed)
    parts = []
    for n in sizes:
        y = rng.randint(0, 10, n)
        x = rng.randint(0, 64, (n, 784)) + 19 * y[:, None]
        parts.append([x.tolist(), y.tolist()])
    Path(path).write_text(json.dumps(parts))
    return f"nndl-json:{path}"


def cli(capsys, *args) -> tuple[int, str, str]:
    """`cnnlab ARGS` in this process -> (exit status, stdout, stderr)."""
    from cnnlab.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_quietly(*args) -> int:
    """`cnnlab ARGS` in this process, its output discarded -> exit status."""
    import io

    from cnnlab.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in args])


def spawn(code: str, *args, env: dict | None = None, stdin=None) -> subprocess.Popen:
    """A fresh Python process running `code` with sys.argv[1:] = args (and extra `env`; stdin:
    subprocess.PIPE to write to it)."""
    # One torch thread: on 2 shared cores, two threads contend (4x slower here); the in-process
    # baselines use one thread too, so results compare bit for bit.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           **{k: str(v) for k, v in (env or {}).items()}}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def one_thread():
    """torch on one thread in this process (as `spawn`'s processes), deterministic mode reset
    afterwards (--deterministic turns it on for the whole process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


def _no_constant(name):
    raise ValueError(f"not JSON: the bare constant {name}")


def load_json_strict(path):
    """A JSON file parsed as strict JSON: NaN, Infinity and -Infinity are errors, not numbers."""
    return json.loads(Path(path).read_text(), parse_constant=_no_constant)


def state(path) -> dict:
    return load_checkpoint(path)["state_dict"]


def run_ids(folder) -> dict:
    """{file: the run id it records} for a run directory's checkpoints and JSON files."""
    folder = Path(folder)
    ids = {name: load_checkpoint(folder / name).get("run_id") for name in ("best.pt", "last.pt")
           if (folder / name).exists()}
    for name in ("history.json", "run.json"):
        if (folder / name).exists():
            ids[name] = load_json_strict(folder / name).get("run_id")
    return ids


def assert_same_run(a, b, files=("best.pt", "last.pt")):
    """Two run directories hold the same histories, test figures and weights, bit for bit (and
    each directory's files carry one run id, its own)."""
    a, b = Path(a), Path(b)
    ids_a, ids_b = run_ids(a), run_ids(b)
    assert len(set(ids_a.values())) == 1 and len(set(ids_b.values())) == 1, (ids_a, ids_b)
    ha, hb = (load_json_strict(d / "history.json") for d in (a, b))
    for key in set(ha) - {"run_id"}:
        assert ha[key] == hb[key], f"history '{key}' differs: {ha[key]} vs {hb[key]}"
    ra, rb = (load_json_strict(d / "run.json")["results"] for d in (a, b))
    for key in ("test_acc", "test_loss", "best_dev_score", "best_step", "steps", "train_epoch_losses"):
        assert ra[key] == rb[key], key
    for name in files:
        sa, sb = state(a / name), state(b / name)
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}: {key} differs"
    la, lb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert la["step"] == lb["step"] and la["epoch"] == lb["epoch"]
    assert repr(la["optimizer"]) == repr(lb["optimizer"])
