"""`cnnlab train / evaluate / predict / edges`: a short real training end to end, the run
directory's files, evaluate agreeing with run.json, and bad input -> one line, exit status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from train_helpers import load_json_strict

PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short real training: LeNet (torch layers), 2 epochs of the bundled lab split."""
    out = tmp_path_factory.mktemp("run") / "lenet"
    code = main(["train", "lenet-native", "--epochs", "2", "--optimizer", "adam", "--lr", "0.003",
                 "--eval-steps", "8", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_train_writes_the_run_directory_and_learns(trained):
    for name in ("best.pt", "history.json", "curves.png", "run.json"):
        assert (trained / name).is_file(), name
    assert (trained / "curves.png").read_bytes().startswith(PNG)
    hist = load_json_strict(trained / "history.json")
    run = load_json_strict(trained / "run.json")
    steps = [s for s, _ in hist["train_step_losses"]]
    assert steps == list(range(32))                          # 16 steps an epoch, 2 epochs
    assert [s for s, _ in hist["dev_scores"]] == [8, 16, 24, 31]
    # learning happened: the loss falls well below chance (ln 10 = 2.30) and accuracy rises
    first = hist["train_step_losses"][0][1]
    assert first > 2.0 and hist["train_epoch_losses"][-1] < 0.75 * first
    res = run["results"]
    assert res["test_acc"] > 0.6 and res["test_n"] == 200
    assert res["best_dev_score"] == max(v for _, v in hist["dev_scores"])
    cfg = run["config"]
    assert (cfg["model"], cfg["epochs"], cfg["batch_size"], cfg["seed"], cfg["data"]) == \
        ("lenet-native", 2, 64, 100, "bundled")
    env = run["environment"]
    assert env["versions"]["torch"] == torch.__version__.split("+")[0]
    assert env["cpu_count"] >= 1 and env["torch_threads"] >= 1
    assert run["wall_s"] > 0 and run["peak_rss_mb"] > 0


def test_evaluate_json_reproduces_the_runs_test_metrics(trained, capsys):
    code, out, _ = run_cli(capsys, "evaluate", trained / "best.pt", "--json")
    assert code == 0
    got = json.loads(out)
    res = load_json_strict(trained / "run.json")["results"]
    assert got["n"] == 200
    assert got["acc"] == res["test_acc"] and got["loss"] == pytest.approx(res["test_loss"], abs=1e-6)
    code, out, _ = run_cli(capsys, "evaluate", trained / "best.pt", "--split", "dev")
    assert code == 0 and "200 images" in out


def test_predict_image_files(trained, tmp_path, capsys):
    from cnnlab.data import load_mnist

    d = load_mnist()
    files = []
    for i in range(6):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(d.test.raw[i].numpy()).save(p)
        files.append(p)
    # a colour photo-like version: dark ink on light paper, another size
    Image.fromarray(255 - d.test.raw[0].numpy()).resize((60, 60)).convert("RGB").save(tmp_path / "c.jpg")
    files.append(tmp_path / "c.jpg")
    code, out, _ = run_cli(capsys, "predict", trained / "best.pt", *files, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == [str(f) for f in files]
    assert all(0.0 <= r["prob"] <= 1.0 for r in rows)
    right = sum(r["class"] == int(d.test.labels[i]) for i, r in enumerate(rows[:6]))
    assert right >= 4
    assert rows[6]["class"] == rows[0]["class"]


def test_edges_default_digit_and_a_file(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "edges", "--out", tmp_path / "e.png")
    assert code == 0 and "254x254" in out
    assert (tmp_path / "e.png").read_bytes().startswith(PNG)
    img = np.zeros((40, 30), dtype=np.uint8)
    img[10:30, 10:20] = 255
    Image.fromarray(img).save(tmp_path / "box.png")
    code, out, _ = run_cli(capsys, "edges", tmp_path / "box.png", "--size", "0", "--out", tmp_path / "b.png")
    assert code == 0 and "28x38 feature map" in out


def test_bad_input_one_line_exit_2(trained, tmp_path, capsys):
    from cnnlab.models import build_model
    from cnnlab.train.checkpoint import model_payload, save_checkpoint

    code, _, err = run_cli(capsys, "train", "vgg16", "--out", tmp_path / "x")
    assert_one_line_error(code, err, "unknown model", "vgg16")
    code, _, err = run_cli(capsys, "train", "lenet", "--data", f"idx:{tmp_path / 'none'}", "--out", tmp_path / "x")
    assert_one_line_error(code, err, "none")
    code, _, err = run_cli(capsys, "train", "lenet", "--data", f"nndl-json:{tmp_path / 'm.json.gz'}",
                           "--out", tmp_path / "x")
    assert_one_line_error(code, err, "m.json.gz", "not found")
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "missing.pt")
    assert_one_line_error(code, err, "missing.pt")
    (tmp_path / "junk.png").write_bytes(b"junk")
    code, _, err = run_cli(capsys, "predict", trained / "best.pt", tmp_path / "junk.png")
    assert_one_line_error(code, err, "junk.png")
    code, _, err = run_cli(capsys, "edges", tmp_path / "junk.png")
    assert_one_line_error(code, err, "junk.png")
    code, _, err = run_cli(capsys, "evaluate", trained / "best.pt", "--model", "resnet18")
    assert_one_line_error(code, err, "lenet-native", "resnet18")
    # a checkpoint that says "lenet" but holds ResNet18 weights
    fake = tmp_path / "fake.pt"
    save_checkpoint(fake, model_payload("lenet", {}, build_model("resnet18")))
    code, _, err = run_cli(capsys, "evaluate", fake)
    assert_one_line_error(code, err, "fake.pt")
    code, _, err = run_cli(capsys, "predict", fake, trained / "curves.png")
    assert_one_line_error(code, err, "fake.pt")


def test_console_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", "nosuch", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "edges"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: cnnlab " + command in capsys.readouterr().out
