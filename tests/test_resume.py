"""Exact resume and graceful interrupts of `cnnlab train` (issue 5, tests 5 and 6, and the
`--resume` / `evaluate` part of test 4).

Tiny synthetic data (96/32/32 images, batch 16: 6 steps per epoch) and LeNet on torch layers, all
with --deterministic. The uninterrupted baselines run in this process; the interrupted runs and
every resume run in fresh processes. The checks compare histories (every step loss, dev loss and
score), test figures, best.pt / last.pt weights and optimizer state bit for bit.
"""

import json
import shlex
import signal

import pytest
import torch

from cnnlab.errors import CorruptCheckpointError
from cnnlab.train.checkpoint import load_checkpoint
from train_helpers import assert_same_run, cli, make_json, one_thread, run_quietly, spawn

pytestmark = pytest.mark.slow  # a few fresh Python processes: ~1 minute on 2 busy cores

# eval at steps 5, 10, ...: the last step of epoch 1 (5) is evaluated whether the run has 1 or 2
# epochs, so "1 epoch, then resume to 2" evaluates exactly where "2 epochs" does.
COMMON = ["--batch-size", "16", "--eval-steps", "5", "--log-steps", "1", "--deterministic"]

# Sends `SIG` to itself TIMES times right after the update that makes global_step == K: a real
# signal at a known step, mid-epoch, in a real `cnnlab train` process.
SELF_SIGNAL = """
import os, signal, sys
from cnnlab.cli import main
from cnnlab.train.runner import Runner
K, SIG, TIMES = int(os.environ["K"]), getattr(signal, os.environ["SIG"]), int(os.environ["TIMES"])
step = Runner._train_step
def patched(self, x, y):
    step(self, x, y)
    if self.global_step == K:
        for _ in range(TIMES):
            os.kill(os.getpid(), SIG)
Runner._train_step = patched
sys.exit(main(sys.argv[1:]))
"""

DRIVER = """
import json, sys
from cnnlab.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps(codes))
"""

CLI = "import sys; from cnnlab.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, made once: {name: Path or value}."""
    tmp = tmp_path_factory.mktemp("resume")
    data = make_json(tmp / "tiny.json")
    base = ["train", "lenet-native", "--data", data, *COMMON]
    r = {"tmp": tmp}

    # Interrupted runs, in fresh processes, started first so they overlap the baselines.
    p_int = spawn(SELF_SIGNAL, *base, "--epochs", 3, "--out", tmp / "D",
                  env={"K": 8, "SIG": "SIGINT", "TIMES": 1})
    p_twice = spawn(SELF_SIGNAL, *base, "--epochs", 3, "--out", tmp / "F",
                    env={"K": 8, "SIG": "SIGINT", "TIMES": 2})
    p_term = spawn(CLI, *base, "--epochs", 4, "--workers", 2, "--out", tmp / "E")
    for line in p_term.stdout:  # SIGTERM from outside once the second epoch is under way
        if line.startswith("[Train] epoch: 1/4, step: 8/"):
            p_term.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail("the SIGTERM run never reached step 8")

    # Uninterrupted baselines and the first halves of "1 epoch + resume", in this process.
    with one_thread():
        for name, loader in (("A", []), ("B", ["--workers", "0"]), ("C", ["--workers", "2"])):
            assert run_quietly(*base, *loader, "--epochs", 2, "--out", tmp / f"{name}_straight") == 0
            assert run_quietly(*base, *loader, "--epochs", 1, "--out", tmp / name) == 0
            r[name] = loader
        assert run_quietly(*base, "--epochs", 3, "--out", tmp / "D_straight") == 0
        assert run_quietly(*base, "--epochs", 4, "--workers", 2, "--out", tmp / "E_straight") == 0

    for name, proc in (("D", p_int), ("F", p_twice), ("E", p_term)):
        out, err = proc.communicate(timeout=300)
        r[name + "_rc"], r[name + "_err"] = proc.returncode, err
        r[name + "_last_before_resume"] = _last_info(tmp / name)

    # Every resume in one more fresh process: the printed resume commands for D and E.
    resumes = [["train", "lenet-native", "--epochs", "2", "--resume", str(tmp / n), *r[n]]
               for n in ("A", "B", "C")]
    for name in ("D", "E"):
        command = [line for line in r[name + "_err"].splitlines() if line.startswith("to resume: ")]
        assert command, r[name + "_err"]
        words = shlex.split(command[0][len("to resume: "):])
        assert words[:2] == ["cnnlab", "train"]
        resumes.append(words[1:])
        r[name + "_command"] = command[0]
    driver = spawn(DRIVER, json.dumps(resumes))
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    r["resume_codes"] = json.loads(out.strip().splitlines()[-1])
    return r


def _last_info(folder):
    try:
        payload = load_checkpoint(folder / "last.pt")
    except (OSError, CorruptCheckpointError) as err:
        return {"error": str(err)}
    weights_finite = all(torch.isfinite(v).all() for v in payload["state_dict"].values()
                         if v.is_floating_point())
    return {"step": payload["step"], "epoch": payload["epoch"], "epoch_step": payload["epoch_step"],
            "finite": weights_finite, "files": sorted(p.name for p in folder.iterdir())}


# ------------------------------------------------------------------ test 5: resume equality

@pytest.mark.parametrize("name", ["A", "B", "C"], ids=["tensor-loader", "workers0", "workers2"])
def test_one_epoch_then_resume_equals_two_epochs(runs, name):
    assert runs["resume_codes"][["A", "B", "C"].index(name)] == 0
    assert_same_run(runs["tmp"] / f"{name}_straight", runs["tmp"] / name)


# ------------------------------------------------------------------ test 6: signals

def test_sigint_mid_epoch_saves_exits_130_and_resumes_exactly(runs):
    assert runs["D_rc"] == 130, runs["D_err"]
    info = runs["D_last_before_resume"]
    assert info["step"] == 8 and info["epoch"] == 1 and info["epoch_step"] == 2  # mid-epoch 2
    assert info["finite"] and not [f for f in info["files"] if f.endswith(".tmp")]
    assert "stopped by SIGINT at step 8" in runs["D_err"]
    assert runs["D_command"].endswith(f"--epochs 3 --resume {runs['tmp'] / 'D'}")
    assert runs["resume_codes"][3] == 0
    assert_same_run(runs["tmp"] / "D_straight", runs["tmp"] / "D")


def test_sigterm_from_outside_with_workers_exits_143_and_resumes_exactly(runs):
    assert runs["E_rc"] == 143, runs["E_err"]
    info = runs["E_last_before_resume"]
    assert info["finite"] and info["step"] >= 9 and info["epoch"] < 4  # stopped mid-run
    assert "--workers 2" in runs["E_command"]
    assert runs["resume_codes"][4] == 0
    assert_same_run(runs["tmp"] / "E_straight", runs["tmp"] / "E")


def test_second_signal_exits_at_once_keeping_the_last_checkpoint(runs):
    assert runs["F_rc"] == 130, runs["F_err"]
    assert "quitting now" in runs["F_err"]
    info = runs["F_last_before_resume"]
    assert info["step"] == 6 and info["epoch"] == 1  # the epoch-end save before the signals
    assert not [f for f in info["files"] if f.endswith(".tmp")]


# ------------------------------------------------------------------ test 4: refused by the CLI

def test_malicious_checkpoint_is_refused_by_evaluate_and_resume(tmp_path, capsys):
    from test_checkpoint import _malicious_files

    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, data in _malicious_files(tmp_path, marker).items():
        path = tmp_path / name
        path.write_bytes(data)
        (run_dir / "last.pt").write_bytes(data)
        for args in (["evaluate", path], ["train", "lenet-native", "--resume", path],
                     ["train", "lenet-native", "--resume", run_dir]):
            code, out, err = cli(capsys, *args)
            assert code == 2, (name, args, err)
            named = name if args[-1] == path else str(run_dir / "last.pt")
            assert err.count("\n") == 1 and "Traceback" not in err and named in err, err
            assert not marker.exists(), (name, args)
