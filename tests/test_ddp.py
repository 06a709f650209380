"""Data-parallel training (issue 12): torchrun + DDP on CPU with gloo, 127.0.0.1 only.

Real MNIST, tiny: the first 149 / 50 / 50 images of the bundled lab split, batch 32, so an epoch
is 5 steps and its last batch (21 images) splits unevenly over 2 processes (11 + 10); 2 epochs =
10 steps, evaluated after steps 4, 8 and 9 (a 1-epoch run evaluates after step 4 too, so a run
resumed to 2 epochs evaluates where an uninterrupted one does). Importing torch in each process is the cost, so few launches check many things, all at
once:
    driver     torchrun, 2 processes, tests/ddp_driver.py: synchronised batch norm vs one-process
               BatchNorm; 2-process trainings (LeNet SGD and Adam, ResNet18 with batch norm),
               resumes with the same and another world size, a bad --out; who wrote what
    two-node   two torchrun launchers (--nnodes 2, c10d rendezvous on 127.0.0.1)
    kill       `cnnlab train --nproc 2`, rank 1 SIGKILLed at step 8
    restart    torchrun --max-restarts 1, rank 1 SIGKILLed at step 8: restarts, resumes itself
    sigint     `cnnlab train --nproc 2`, SIGINT to the launcher at step 3 (as Ctrl-C)
Faults are injected by tests/ddp_faults/sitecustomize.py. The single-process references run in
this process (one thread), meanwhile. Learning rates are moderate (LeNet SGD 0.02, Adam 0.001,
ResNet18 0.001): at the lab's 0.1 the first steps are chaotic enough that rounding differences
(two processes, or one process with 2 threads instead of 1) grow past 1e-5 within 10 steps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.train.checkpoint import load_checkpoint
from train_helpers import ROOT, assert_same_run, load_json_strict, one_thread, run_quietly

pytestmark = pytest.mark.slow  # a few torchrun launches, overlapped: ~1 minute on 2 cores

TIMEOUT_S = 240  # per launch; a hang fails the test instead of the suite
SIZES = (149, 50, 50)
COMMON = ["--batch-size", "32", "--eval-steps", "4", "--log-steps", "1", "--deterministic",
          "--quiet"]
REL = 1e-5


def tiny_mnist(path: Path) -> str:
    """The first SIZES images of the bundled lab split as the lab's json format -> --data."""
    from cnnlab.data import load_mnist

    data = load_mnist("bundled", "lab")
    parts = [[part.raw[:n].reshape(n, -1).tolist(), part.labels[:n].tolist()]
             for part, n in zip((data.train, data.dev, data.test), SIZES)]
    path.write_text(json.dumps(parts))
    return f"nndl-json:{path}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv, fault: str | None = None) -> subprocess.Popen:
    """A launcher process (its workers inherit this environment: our sources, the fault hook,
    gloo on the loopback interface)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "ddp_faults"), str(ROOT / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("CNNLAB_TEST_FAULT", None)
    if fault:
        env["CNNLAB_TEST_FAULT"] = fault
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"hung for {TIMEOUT_S} s: {proc.args}\n{err[-3000:]}")
    return proc.returncode, out, err


def torchrun(*options):
    return ["-m", "torch.distributed.run", *options, "--local-addr", "127.0.0.1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = tiny_mnist(tmp / "tiny.json")
    lenet = ["train", "lenet-native", "--data", data, *COMMON]
    sgd = [*lenet, "--lr", "0.02"]
    adam = [*lenet, "--optimizer", "adam", "--lr", "0.001"]
    bn = ["train", "resnet18", "--data", data, *COMMON, "--lr", "0.001"]
    with one_thread():  # 1 epoch in one process, resumed below by two
        assert run_quietly(*sgd, "--epochs", 1, "--out", tmp / "res12") == 0
    (tmp / "not-a-dir").write_text("a file")
    plan = [
        ("sgd", [*sgd, "--epochs", 2, "--out", tmp / "sgd"]),
        ("adam", [*adam, "--epochs", 2, "--out", tmp / "adam"]),
        ("bn", [*bn, "--epochs", 2, "--out", tmp / "bn"]),
        ("res22-first", [*sgd, "--epochs", 1, "--out", tmp / "res22"]),
        ("res22-resume", [*sgd, "--epochs", 2, "--resume", tmp / "res22"]),
        ("res12-resume", [*sgd, "--epochs", 2, "--resume", tmp / "res12"]),
        ("res21-first", [*sgd, "--epochs", 1, "--out", tmp / "res21"]),
        ("bad-out", [*sgd, "--epochs", 1, "--out", tmp / "not-a-dir"]),
    ]
    (tmp / "plan.json").write_text(json.dumps([[label, list(map(str, argv))] for label, argv in plan]))
    port = free_port()
    two_node = [*torchrun("--nnodes", 2, "--nproc-per-node", 1, "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "cnnlab-two-node"),
                "-m", "cnnlab", *sgd, "--epochs", 2, "--out", tmp / "two-node"]
    procs = {
        "driver": launch([*torchrun("--standalone", "--nproc-per-node", 2),
                          ROOT / "tests" / "ddp_driver.py", tmp / "plan.json", tmp]),
        "node-a": launch(two_node),
        "node-b": launch(two_node),
        "kill": launch(["-m", "cnnlab", *sgd, "--epochs", 2, "--out", tmp / "kill", "--nproc", 2],
                       fault="kill:1:8"),
        "restart": launch([*torchrun("--standalone", "--nproc-per-node", 2, "--max-restarts", 1),
                           "-m", "cnnlab", *sgd, "--epochs", 2, "--out", tmp / "restart"],
                          fault="kill:1:8"),
        "sigint": launch(["-m", "cnnlab", *sgd, "--epochs", 2, "--out", tmp / "sigint",
                          "--nproc", 2], fault="sigint-launcher:0:3"),
    }
    with one_thread():  # the single-process references, while the launches run
        for name, argv in (("sgd", sgd), ("adam", adam), ("bn", bn)):
            assert run_quietly(*argv, "--epochs", 2, "--out", tmp / f"one-{name}") == 0
    r = {"tmp": tmp, **{name: finish(proc) for name, proc in procs.items()}}
    r["ranks"] = [load_json_strict(tmp / f"rank{rank}.json") for rank in (0, 1)] \
        if r["driver"][0] == 0 else None
    r["sigint-last"] = load_checkpoint(tmp / "sigint" / "last.pt")  # as the stop left it
    with one_thread():  # continue two-process runs in one process
        r["res21-resume"] = run_quietly(*sgd, "--epochs", 2, "--resume", tmp / "res21")
        r["sigint-resume"] = run_quietly(*sgd, "--epochs", 2, "--resume", tmp / "sigint")
    return r


def _run(runs, label, rank=0):
    assert runs["ranks"] is not None, runs["driver"][2][-3000:]
    return next(run for run in runs["ranks"][rank]["runs"] if run["label"] == label)


def weight_differences(a: Path, b: Path, noise=()) -> dict:
    """{tensor: max|a - b| / max|b|} over best.pt and last.pt of two run directories; tensors in
    `noise` (whose gradient is exactly zero, e.g. a conv bias followed by batch norm: they hold
    rounding noise) are compared by max|a - b| instead."""
    diffs = {}
    for name in ("best.pt", "last.pt"):
        sa, sb = load_checkpoint(a / name)["state_dict"], load_checkpoint(b / name)["state_dict"]
        assert sa.keys() == sb.keys()
        for key in sa:
            x, y = sa[key].double(), sb[key].double()
            gap = float((x - y).abs().max())
            diffs[f"{name}:{key}"] = gap if key in noise else gap / max(float(y.abs().max()), 1e-30)
    return diffs


def assert_same_figures(a: Path, b: Path, rel=REL, noise=()) -> float:
    """Two runs agree: weights to `rel` (relative, per tensor), dev/test accuracy and the best
    step exactly, every loss to `rel` -> the largest weight difference."""
    diffs = weight_differences(a, b, noise)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= rel, f"{worst}: {diffs[worst]:.3g}"
    ra, rb = (load_json_strict(d / "run.json")["results"] for d in (a, b))
    for key in ("test_acc", "best_dev_score", "best_step", "steps", "tested_model"):
        assert ra[key] == rb[key], key
    ha, hb = (load_json_strict(d / "history.json") for d in (a, b))
    assert ha["dev_scores"] == hb["dev_scores"]
    pairs = [(ra["test_loss"], rb["test_loss"]), *zip(ra["train_epoch_losses"], rb["train_epoch_losses"])]
    for key in ("dev_losses", "train_step_losses"):
        assert [s for s, _ in ha[key]] == [s for s, _ in hb[key]], key
        pairs += [(x, y) for (_, x), (_, y) in zip(ha[key], hb[key])]
    assert all(abs(x - y) <= rel * abs(y) for x, y in pairs), pairs
    return diffs[worst]


# ----------------------------------------------------------------------- batch norm

def test_sync_batchnorm_matches_one_process_batchnorm_on_the_global_batch(runs):
    for rank in (0, 1):
        for case, d in runs["ranks"][rank]["syncbn"].items():
            tol = 1e-5 if case.endswith("float32") else 1e-12
            for key in ("y", "dx", "dweight", "dbias", "running_mean", "running_var"):
                assert d[key] <= tol, (rank, case, key, d[key])
            assert d["batches_tracked"] == 0
    # the unequal cases really are unequal: 9 samples = 5 + 4, 7 = 4 + 3
    assert [runs["ranks"][r]["syncbn"]["unequal"]["shard"] for r in (0, 1)] == [[0, 5], [5, 9]]


# ------------------------------------------------------------- same mathematics

@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_two_processes_train_lenet_as_one_process(runs, name):
    assert _run(runs, name)["code"] == 0 and _run(runs, name, 1)["code"] == 0
    assert_same_figures(runs["tmp"] / name, runs["tmp"] / f"one-{name}")


def test_two_processes_train_resnet18_with_batch_norm_as_one_process(runs):
    assert _run(runs, "bn")["code"] == 0
    # the stem conv's bias is followed by batch norm: its gradient is 0, its values rounding noise
    assert_same_figures(runs["tmp"] / "bn", runs["tmp"] / "one-bn", noise={"conv1.bias"})
    state = load_checkpoint(runs["tmp"] / "bn" / "last.pt")["state_dict"]
    assert int(state["bn1.num_batches_tracked"]) == 10  # one update per step, not per process


def test_only_rank_0_writes_files_and_prints(runs):
    for label in ("sgd", "adam", "bn", "res22-first", "res22-resume"):
        assert _run(runs, label, 1)["writes"] == [] and _run(runs, label, 1)["stderr"] == ""
    names = {Path(p).name for p in _run(runs, "sgd")["writes"]}
    assert names == {".lock", "best.pt", "last.pt", "history.json", "curves.png", "run.json"}
    run = load_json_strict(runs["tmp"] / "sgd" / "run.json")
    assert run["results"]["distributed"]["world_size"] == 2
    assert run["results"]["distributed"]["backend"] == "gloo"
    assert load_checkpoint(runs["tmp"] / "sgd" / "last.pt")["distributed"]["world_size"] == 2


def test_a_bad_output_directory_is_one_line_from_rank_0_and_exit_2_everywhere(runs):
    first, other = _run(runs, "bad-out"), _run(runs, "bad-out", 1)
    assert first["code"] == 2 and other["code"] == 2
    lines = first["stderr"].strip().splitlines()
    assert len(lines) == 1 and "not a directory" in lines[0], first["stderr"]
    assert other["stderr"] == "" and other["writes"] == []


# -------------------------------------------------------------------------- resume

def test_resume_with_the_same_world_size_is_bit_exact(runs):
    assert _run(runs, "res22-resume")["code"] == 0
    assert_same_run(runs["tmp"] / "res22", runs["tmp"] / "sgd")


def test_resume_with_another_world_size_continues_the_run(runs):
    assert _run(runs, "res12-resume")["code"] == 0 and runs["res21-resume"] == 0
    for name in ("res12", "res21"):  # 1 then 2 processes; 2 then 1
        assert_same_figures(runs["tmp"] / name, runs["tmp"] / "one-sgd")


# ------------------------------------------------------------------- multi-node

def test_two_nodes_through_the_c10d_rendezvous_train_as_two_processes(runs):
    for node in ("node-a", "node-b"):
        assert runs[node][0] == 0, runs[node][2][-3000:]
    assert_same_run(runs["tmp"] / "two-node", runs["tmp"] / "sgd")


# -------------------------------------------------------------------------- faults

def test_a_killed_rank_ends_the_job_with_one_line_and_a_loadable_last_checkpoint(runs):
    code, out, err = runs["kill"]
    assert code == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("cnnlab train: error: rank 1 (pid ") and "SIGKILL" in lines[0]
    last = load_checkpoint(runs["tmp"] / "kill" / "last.pt")
    # killed after step 7: the last save was at the end of epoch 1 (step 5)
    assert last["step"] == 5 and "holds step 5" in lines[0]
    assert "--resume" in lines[0] and "--nproc 2" in lines[0]


def test_torchrun_restarts_resume_by_themselves_and_end_as_an_uninterrupted_run(runs):
    code, out, err = runs["restart"]
    assert code == 0, err[-3000:]
    assert "torchrun restart 1: resuming" in err
    assert_same_run(runs["tmp"] / "restart", runs["tmp"] / "sgd")


def test_sigint_to_the_launcher_stops_every_rank_and_saves_once(runs):
    code, out, err = runs["sigint"]
    assert code == 130, err[-3000:]
    assert err.count("stopped by SIGINT") == 1 and "Traceback" not in err, err
    assert runs["sigint-last"]["step"] == 3 and "at step 3 " in err, err  # all ranks stopped there
    # resumed in one process, it ends where the one-process run ends
    assert runs["sigint-resume"] == 0
    assert_same_figures(runs["tmp"] / "sigint", runs["tmp"] / "one-sgd")

