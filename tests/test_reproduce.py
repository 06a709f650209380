"""`cnnlab reproduce`: a --quick run end to end, bad input, and the report's statistics.

The expected numbers are the lab's own printouts (seed text), typed here by hand, not copied from
cnnlab's output; the quick run's figures are recomputed here from its own files.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.train.checkpoint import load_checkpoint, model_payload, save_checkpoint
from train_helpers import load_json_strict, run_ids

OLD_RUN = "0" * 32  # the run id of the earlier reproduce's LeNet, planted below


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A --quick reproduce into a folder that holds an earlier reproduce's output: a LeNet run
    of another run id, a note of the user's, and a temp file a killed writer left."""
    from cnnlab.models import build_model

    out = tmp_path_factory.mktemp("reproduce") / "out"
    (out / "lenet").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"command": "cnnlab reproduce"}))
    save_checkpoint(out / "lenet" / "best.pt", model_payload(
        "lenet", {"in_channels": 1}, build_model("lenet"), run_id=OLD_RUN, best_score=0.99, step=3))
    (out / "lenet" / "history.json").write_text(json.dumps({"run_id": OLD_RUN, "dev_scores": []}))
    (out / "lenet" / "notes.txt").write_text("mine")
    (out / "lenet" / ".best.pt.0123456789ab.cnnlab-tmp").write_bytes(b"half a checkpoint")
    rc = main(["reproduce", "--out", str(out), "--quick", "--quiet", "--device", "cpu"])
    return rc, out


@pytest.mark.slow
def test_quick_run_writes_every_file_and_replaces_its_earlier_output(quick_run):
    rc, out = quick_run
    assert rc == 0, (out / "results.json").read_text()[:2000]
    for name in ("report.md", "results.json", "run.json", "edges.png", "predict.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # each training's run directory has the layout of `cnnlab train --out`, one run id in all
    for model in ("lenet", "resnet18-plain", "resnet18"):
        ids = run_ids(out / model)
        assert set(ids) == {"best.pt", "last.pt", "history.json", "run.json"}, model
        assert len(set(ids.values())) == 1 and OLD_RUN not in ids.values(), (model, ids)
        assert (out / model / "curves.png").is_file()
    assert (out / "lenet" / "notes.txt").read_text() == "mine"  # only the run's files replaced
    assert not list(out.rglob("*.cnnlab-tmp"))                    # the dead writer's temp is gone
    run = load_json_strict(out / "run.json")
    assert run["command"] == "cnnlab reproduce" and run["config"]["quick"] is True
    assert run["environment"]["versions"]["torch"] == torch.__version__.split("+")[0]


def _lenet_on_quick_test_set(out):
    """The quick run's LeNet best.pt on the quick test subset (the first 64 lab-split test
    images), evaluated here by hand -> (logits, labels, test images)."""
    from cnnlab.data import load_mnist
    from cnnlab.models import build_model

    payload = load_checkpoint(out / "lenet" / "best.pt")
    model = build_model("lenet", **payload["model"]["kwargs"]).eval()
    model.load_state_dict(payload["state_dict"])
    test = load_mnist("bundled", "lab").test
    with torch.no_grad():
        return model(test.images[:64]), test.labels[:64], test


@pytest.mark.slow
def test_quick_run_results_match_the_lab_and_its_own_files(quick_run):
    rc, out = quick_run
    results = load_json_strict(out / "results.json")
    ph = results["phases"]
    assert all(t["status"] == "ok" for t in results["timings"]), results["timings"]

    ex = {r["key"]: r for r in ph["ops"]["examples"]}
    for impl in ("reference", "fast"):
        assert ex["conv_2x2"][impl] == [[25, 31], [43, 49]]
        assert ex["conv_multichannel"][impl] == [[[20, 28], [44, 52]]] * 3
        assert ex["conv_shapes"][impl] == {"stride1": [2, 8, 8], "stride2": [2, 4, 4]}
        assert ex["maxpool"][impl] == [[6, 8], [14, 16]]
        assert ex["avgpool"][impl] == [[3.5, 5.5], [11.5, 13.5]]
    assert ph["ops"]["checks"] and ph["ops"]["all_passed"]

    assert [r["output"] for r in ph["shape_walk"]["rows"]] == [
        [1, 6, 28, 28], [1, 6, 14, 14], [1, 16, 10, 10], [1, 16, 5, 5], [1, 120, 1, 1], [1, 84],
        [1, 10]]
    le, rn = ph["counting"]["lenet"], ph["counting"]["resnet18"]
    assert (le["lab_params"], le["flops"]) == (61_706, 423_344)
    assert [r["flops"] for r in le["layers"]] == [122_304, 0, 241_600, 400, 48_120, 10_080, 840]
    assert (rn["lab_params"], rn["trainable_params"], rn["flops"]) == (11_185_034, 11_175_434,
                                                                     35_529_728)

    tv = ph["torchvision_check"]
    assert tv["proper"]["passed"] and len(tv["proper"]["checks"]) == 2
    assert all(c["max_abs_diff"] < 1e-9 for c in tv["proper"]["checks"])
    # the lab's protocol says "equal" for two different networks
    assert tv["lab_protocol"]["eval_mode_max_abs_diff"] > 0.1
    assert abs(tv["lab_protocol"]["max_diff"]) < 1e-3

    # LeNet's test figures, recomputed by hand from its best.pt (the run tested best.pt)
    logits, labels, test = _lenet_on_quick_test_set(out)
    run = ph["train:lenet"]["runs"][0]
    assert load_json_strict(out / "lenet" / "run.json")["results"]["tested_model"] == "best"
    assert run["test_acc"] == (logits.argmax(1) == labels).float().mean().item()
    assert run["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert run["seed"] == 100 and run["sizes"] == {"train": 64, "dev": 32, "test": 64}
    # the prediction demo: sample 1 of the first test batch, by the same best.pt
    probs = torch.softmax(logits, 1)
    pred = ph["prediction"]
    assert (pred["true"], pred["pred"]) == (int(test.labels[1]), int(probs[1].argmax()))
    assert pred["prob"] == pytest.approx(probs[1].max().item(), rel=1e-5)

    b = results["budget"]
    # LeNet's FLOPs per image: 2 x MACs + the other counted ops, from the lab's figures: MACs
    # 6*28*28*25 + 16*10*10*150 + 120*400 + 120*84 + 84*10 = 416,520 of the 423,344 FLOPs.
    per_image = 2 * 416_520 + (423_344 - 416_520)
    evals = len(load_json_strict(out / "lenet" / "history.json")["dev_scores"])
    assert b["training_flops"]["per_model"]["lenet"] == per_image * (3 * 64 * 1 + evals * 32 + 64)
    assert b["floor_s"] == pytest.approx(b["training_flops"]["total"] / b["matmul_flops_per_s"])
    assert b["command_wall_s"] >= b["total_wall_s"] >= sum(t["wall_s"] for t in results["timings"])
    # torch alone takes well over 100 MB; the peak includes it
    assert b["peak_rss_gb"] * 1e9 >= results["resources"]["after_imports_bytes"] > 100e6
    # the tests run with the autotuner off (conftest): nothing timed, in the report too
    assert (b["autotune_mode"], b["keys_tuned"], b["tune_s"], b["trainings_tune_s"]) == \
        ("off", 0, 0.0, 0.0)
    assert "**Autotuner** (mode off): 0.00 s" in (out / "report.md").read_text()


@pytest.mark.slow
def test_quick_report_shows_the_lab_figures(quick_run):
    _, out = quick_run
    report = (out / "report.md").read_text()
    for figure in ("0.8700", "0.4423", "0.8100", "0.5841", "0.8800", "0.3523",  # published
                   "0.870", "0.461", "0.875", "0.531", "0.900", "0.413",          # original code
                   "509 s", "176 s", "137 s", "4.55 GB", "820 s",
                   "61,706", "423,344", "11,185,034", "11,175,434", "11,165,834", "19,200",
                   "35,529,728", "[[25, 31], [43, 49]]", "[[20, 28], [44, 52]]",
                   "[[6, 8], [14, 16]]", "[[3.5, 5.5], [11.5, 13.5]]", "3,900",
                   "![", "edges.png", "predict.png", "lenet/curves.png", "Quick smoke run"):
        assert figure in report, figure


def test_a_train_runs_folder_is_refused(tmp_path, capsys):
    (tmp_path / "best.pt").write_bytes(b"a cnnlab train run's")
    assert main(["reproduce", "--out", str(tmp_path), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cnnlab reproduce: error: {tmp_path} holds a `cnnlab train` run (best.pt), not "
                   "the output of an earlier reproduce: choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_bad_seeds_is_one_line_exit_2(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seeds" in err


def test_unwritable_out_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["reproduce", "--out", str(blocker / "sub"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err


def test_non_integer_seeds_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--out", str(tmp_path / "r"), "--seeds", "two"])
    assert exc.value.code == 2


def test_seed_run_directories(tmp_path):
    from cnnlab.report.reproduce import ReproduceOptions
    from cnnlab.report.trainings import run_dir, seeds_for

    one = ReproduceOptions(out=tmp_path)
    assert seeds_for(one) == [100] and run_dir(one, "lenet", 100) == tmp_path / "lenet"
    three = ReproduceOptions(out=tmp_path, seeds=3)
    assert seeds_for(three) == [100, 101, 102]
    assert run_dir(three, "resnet18", 101) == tmp_path / "resnet18" / "seed101"


def _fake(plain, resid, n_test=200):
    def runs(accs):
        return [{"seed": 100 + i, "test_acc": a, "sizes": {"test": n_test}} for i, a in enumerate(accs)]
    return {"phases": {"train:resnet18-plain": {"runs": runs(plain)},
                       "train:resnet18": {"runs": runs(resid)}}}


def test_residual_claim_verdicts():
    from cnnlab.report.trainings import residual_claim

    one = residual_claim(_fake([0.81], [0.88]))
    assert one["verdict"].startswith("untested") and one["mean_diff"] == pytest.approx(0.07)
    # binomial standard error of 0.88 on 200 images: sqrt(0.88 * 0.12 / 200) = 0.02298
    assert one["binomial_se"] == pytest.approx(0.022978, abs=1e-5)
    win = residual_claim(_fake([0.80, 0.82, 0.81], [0.88, 0.89, 0.87]))
    assert win["verdict"] == "supported" and win["wins"] == 3
    assert win["mean_diff"] == pytest.approx(0.07)
    lose = residual_claim(_fake([0.88, 0.86, 0.87], [0.85, 0.86, 0.86]))
    assert lose["verdict"] == "not supported" and lose["ties"] == 1
    mixed = residual_claim(_fake([0.80, 0.90, 0.85], [0.86, 0.88, 0.87]))
    assert mixed["verdict"] == "inconclusive"


def test_matmul_rate_is_2n3_over_the_best_time():
    from cnnlab.report.reproduce import measure_matmul

    # a clock whose 3 timed runs take 0.5, 0.25 and 0.375 s; then 100 s have passed
    ticks = iter([0.0, 10.0, 10.5, 11.0, 11.25, 12.0, 12.375, 100.0])
    m = measure_matmul(n=64, seconds=1.0, clock=lambda: next(ticks))
    assert m["runs"] == 3
    assert m["flops_per_s"] == 2 * 64**3 / 0.25
