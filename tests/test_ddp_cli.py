"""`cnnlab train --nproc N` checks everything it can before it starts any process (a bad input:
one line, exit status 2, no launch), and `python -m cnnlab` is the cnnlab command (what torchrun's
`-m cnnlab` runs). The launches themselves: tests/test_ddp.py."""

import os
import subprocess
import sys

import pytest

from train_helpers import ROOT


@pytest.mark.parametrize("args,words", [
    (["--nproc", "0"], "--nproc must be >= 1"),
    (["--nproc", "2", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--nproc", "2", "--dist-timeout", "0"], "--dist-timeout must be > 0"),
    (["--nproc", "2", "--device", "cuda:1"], "--device cuda:1"),
    (["--nproc", "2", "--resume", "nowhere"], "--resume nowhere"),
])
def test_nproc_checks_the_arguments_before_starting_any_process(args, words, capsys, tmp_path,
                                                                monkeypatch):
    import torch.distributed.run

    from cnnlab.cli import main

    monkeypatch.setattr(torch.distributed.run, "run", lambda *a: pytest.fail("launched"))
    capsys.readouterr()
    code = main(["train", "lenet-native", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "r").exists()


def test_nproc_refuses_a_directory_holding_another_run_before_starting(capsys, tmp_path,
                                                                        monkeypatch):
    import torch.distributed.run

    from cnnlab.cli import main

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    monkeypatch.setattr(torch.distributed.run, "run", lambda *a: pytest.fail("launched"))
    capsys.readouterr()
    assert main(["train", "lenet-native", "--out", str(tmp_path / "r"), "--nproc", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_python_dash_m_cnnlab_is_the_cnnlab_command():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0 and "--nproc N" in out.stdout and "--max-restarts" in out.stdout
