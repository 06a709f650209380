"""`cnnlab train / evaluate / predict / reproduce --part 2` on CIFAR-10 (synthetic files in the
official format, cnnlab.data.synthetic): a short CPU training learns, evaluate and predict
reproduce it, an augmented one-cycle run resumes bit for bit, the fast operators and bf16
autocast train a CIFAR model, the part-2 report is written whole, bad input gets one line.

All trainings use ResNet18 with the notebook's 7x7 stem (`resnet18-vision`, cheap at 32x32)
except the quick reproduce, which trains both recipes' own models on a few images.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.synthetic import CLASSES, batch_dict, py2_dumps, write_cifar10
from cnnlab.train.checkpoint import load_checkpoint
from train_helpers import assert_same_run, cli, load_json_strict, one_thread

LEARN = ["--subset", "160", "--epochs", "3", "--batch-size", "20", "--eval-steps", "8",
         "--log-steps", "8", "--quiet"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """cifar10:ROOT of a synthetic CIFAR-10 with 60 images a batch (train 240 / dev 60 / test 60)."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=60)


@pytest.fixture(scope="module")
def trained(cifar, tmp_path_factory):
    """The lab recipe (the default on CIFAR-10; MODEL left out) on 160 training images, 24 steps."""
    from cnnlab.cli import main

    out = tmp_path_factory.mktemp("runs") / "lab"
    with one_thread():
        assert main(["train", "--data", f"cifar10:{cifar.root}", *LEARN, "--out", str(out)]) == 0
    return out


def test_a_short_cpu_training_learns_and_records_its_recipe(trained):
    run = load_json_strict(trained / "run.json")
    res, cfg = run["results"], run["config"]
    assert res["test_n"] == 60 and res["test_acc"] >= 0.6   # chance: 0.1
    scores = [s for _, s in load_json_strict(trained / "history.json")["dev_scores"]]
    assert scores[-1] > scores[0] and max(scores) >= 0.6
    assert (cfg["recipe"], cfg["model"], cfg["subset"], cfg["normalize"], cfg["optimizer"],
            cfg["lr"], cfg["weight_decay"], cfg["augment"], cfg["amp"]) == \
        ("lab", "resnet18-vision", 160, "lab", "adam", 0.001, 0.005, "none", "off")
    assert res["device"] == "cpu" and res["train_images_per_s"] > 0
    # every builder argument is recorded: a later default change cannot alter the checkpoint
    assert load_checkpoint(trained / "best.pt")["model"]["kwargs"] == \
        {"in_channels": 3, "num_classes": 10, "stem_bias": False, "conv_impl": "native"}


def test_evaluate_reproduces_the_run_and_predict_names_the_class(trained, cifar, tmp_path, capsys):
    from cnnlab.data import load_cifar10
    from cnnlab.models import build_model

    code, out, _ = cli(capsys, "evaluate", trained / "best.pt", "--json")
    got, res = load_json_strict_text(out), load_json_strict(trained / "run.json")["results"]
    assert code == 0 and got["n"] == 60 and got["acc"] == res["test_acc"]
    assert got["loss"] == pytest.approx(res["test_loss"], abs=1e-6)
    # predict: CIFAR's own test images as PNG files, and one of them enlarged to 70x50
    test = load_cifar10(cifar.root).test
    files = []
    for i in range(3):
        files.append(tmp_path / f"test{i}.png")
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(files[-1])
    Image.open(files[0]).resize((70, 50)).save(tmp_path / "big.png")
    code, out, _ = cli(capsys, "predict", trained / "best.pt", *files, tmp_path / "big.png",
                       "--json")
    rows = [load_json_strict_text(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4 and all(r["name"] == CLASSES[r["class"]] for r in rows)
    # the 32x32 files are the test images themselves: the model on them, by hand
    payload = load_checkpoint(trained / "best.pt")
    model = build_model("resnet18-vision").eval()
    model.load_state_dict(payload["state_dict"])
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = torch.softmax(model((test.images[:3].float() / 255 - mean) / std), dim=1)
    for row, p in zip(rows, probs):
        assert row["class"] == int(p.argmax()) and row["prob"] == pytest.approx(float(p.max()),
                                                                                abs=1e-5)


def load_json_strict_text(text):
    """One line of --json output, parsed as strict JSON (no bare NaN)."""
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_an_augmented_one_cycle_run_resumes_bit_for_bit(cifar, tmp_path, capsys, monkeypatch):
    """The fast recipe's random crops/flips, one-cycle schedule, label smoothing and TTA (on the
    cheap model): stopped by SIGINT mid-epoch, resumed, equal to the uninterrupted run."""
    from cnnlab.train.runner import Runner

    args = ["train", "resnet18-vision", "--recipe", "fast", "--data", f"cifar10:{cifar.root}",
            "--subset", "32", "--batch-size", "8", "--epochs", "2", "--eval-steps", "3",
            "--lr", "0.02", "--log-steps", "1", "--deterministic", "--quiet"]
    with one_thread():
        assert cli(capsys, *args, "--out", tmp_path / "A")[0] == 0
        step = Runner._train_step

        def stop_at_step_5(self, x, y):
            step(self, x, y)
            if self.global_step == 5:   # mid-epoch 2 (4 steps an epoch)
                os.kill(os.getpid(), signal.SIGINT)

        monkeypatch.setattr(Runner, "_train_step", stop_at_step_5)
        code, _, err = cli(capsys, *args, "--out", tmp_path / "B")
        assert code == 130 and "to resume: cnnlab train resnet18-vision --epochs 2" in err
        last = load_checkpoint(tmp_path / "B" / "last.pt")
        assert last["step"] == 5 and last["rng"]["augment"].dtype == torch.uint8
        monkeypatch.setattr(Runner, "_train_step", step)
        # the one-cycle schedule is laid out for 2 epochs: it cannot be stretched on resume
        code, _, err = cli(capsys, "train", "--resume", tmp_path / "B", "--epochs", "3")
        _one_line(code, err, "one-cycle", "--epochs 2")
        assert cli(capsys, "train", "--resume", tmp_path / "B", "--quiet")[0] == 0
    assert_same_run(tmp_path / "A", tmp_path / "B")
    config = load_json_strict(tmp_path / "B" / "run.json")["config"]
    assert (config["augment"], config["schedule"], config["tta"]) == ("crop-flip", "onecycle", True)


def test_fast_operators_and_bf16_autocast_train_a_cifar_model(cifar, tmp_path, capsys):
    from cnnlab import nn as cnn
    from cnnlab.train.checkpoint import load_model

    with one_thread():
        code, _, err = cli(capsys, "train", "resnet18-vision", "--data", f"cifar10:{cifar.root}",
                           "--ops", "fast", "--amp", "bf16", "--subset", "16", "--batch-size",
                           "8", "--epochs", "1", "--eval-steps", "1", "--quiet", "--out",
                           tmp_path / "fast")
    assert code == 0, err
    run = load_json_strict(tmp_path / "fast" / "run.json")
    assert run["config"]["amp"] == "bf16" and np.isfinite(run["results"]["test_loss"])
    model, payload = load_model(tmp_path / "fast" / "best.pt")
    assert payload["model"]["kwargs"]["conv_impl"] == "fast"
    assert isinstance(model.layer1[0].conv1, cnn.Conv2D)


@pytest.mark.slow
def test_reproduce_part2_quick_writes_every_file(cifar, tmp_path, capsys, monkeypatch):
    from cnnlab.report import part2

    monkeypatch.setattr(part2, "QUICK_SIZE", 24)
    monkeypatch.setattr(part2, "QUICK_BATCH", 12)
    monkeypatch.setattr(part2, "QUICK_EVAL", 1)
    out = tmp_path / "p2"
    with one_thread():
        code, stdout, _ = cli(capsys, "reproduce", "--part", "2", "--quick", "--data",
                              f"cifar10:{cifar.root}", "--out", out, "--device", "cpu")
    assert code == 0, (out / "results.json").read_text()[:3000]
    for name in ("report.md", "results.json", "run.json", "confusion_lab.png",
                 "confusion_fast.png", "samples_lab.png", "samples_fast.png"):
        assert (out / name).stat().st_size > 0, name
    for recipe in ("lab", "fast"):
        for name in ("best.pt", "last.pt", "history.json", "curves.png", "run.json"):
            assert (out / recipe / name).is_file(), (recipe, name)
    results = load_json_strict(out / "results.json")
    for recipe in ("lab", "fast"):
        test = results["phases"][f"test:{recipe}"]
        matrix = np.array(test["confusion"])
        assert matrix.sum() == test["n"] == 24
        assert test["accuracy"] == pytest.approx(np.trace(matrix) / 24)
        run = results["phases"][f"train:{recipe}"]["results"]
        assert run["test_acc"] == pytest.approx(test["accuracy"])  # the same best.pt, re-run
        assert results["phases"][f"train:{recipe}"]["config"]["recipe"] == recipe
    report = (out / "report.md").read_text()
    for text in ("Quick smoke run", "0.7272", "0.7234", "0.8324", "0.7094", "0.9058",
                 "1000-way head", "confusion_fast.png", "samples_lab.png", "lab/curves.png",
                 "img/s"):
        assert text in report, text
    assert "cnnlab reproduce --part 2 --quick" in stdout
    assert load_json_strict(out / "run.json")["command"] == "cnnlab reproduce --part 2"


# ----------------------------------------------------------------------------- bad input
def _one_line(code, err, *words):
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def _damaged_copy(cifar, tmp_path, name, **changes):
    root = tmp_path / "damaged"
    folder = root / cifar.folder.name
    folder.mkdir(parents=True)
    for f in cifar.folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data, labels = cifar.batches[name]
    batch = {**batch_dict(data, labels, "training batch 2 of 5"), **changes}
    (folder / name).write_bytes(py2_dumps(batch))
    return f"cifar10:{root}"


def test_bad_cifar_input_gets_one_line_and_nothing_is_written(cifar, tmp_path, capsys):
    good = f"cifar10:{cifar.root}"
    data, labels = cifar.batches["data_batch_2"]
    wrong_shape = _damaged_copy(cifar, tmp_path / "a", "data_batch_2", data=data[:, :100].copy())
    bad_label = _damaged_copy(cifar, tmp_path / "b", "data_batch_2",
                              labels=[10] + [int(y) for y in labels[1:]])
    cases = [
        (["train", "--data", f"cifar10:{tmp_path / 'none'}"], ["not found"]),
        (["train", "--data", wrong_shape], ["data_batch_2", "uint8 [N, 3072]"]),
        (["train", "--data", bad_label], ["data_batch_2", "label 10", "out of range"]),
        (["train", "--data", good, "--recipe", "nosuch"], ["--recipe", "nosuch"]),
        (["train", "--data", good, "--subset", "0"], ["--subset must be >= 1"]),
        (["train", "--recipe", "fast"], ["CIFAR-10", "cifar10:PATH"]),
        (["train"], ["no MODEL given"]),
        (["reproduce", "--part", "2"], ["--data cifar10:PATH"]),
        (["reproduce", "--part", "2", "--data", f"cifar10:{tmp_path / 'none'}"], ["not found"]),
        (["reproduce", "--part", "2", "--data", bad_label], ["label 10"]),
        (["evaluate", tmp_path / "none.pt"], ["none.pt"]),
    ]
    for argv, words in cases:
        out = tmp_path / "out"
        code, _, err = cli(capsys, *argv, "--out", out) if argv[0] != "evaluate" else \
            cli(capsys, *argv)
        _one_line(code, err, *words)
        assert not out.exists(), argv  # nothing half-written, not even the folder
