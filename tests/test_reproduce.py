"""`cnnlab reproduce`: a --quick run end to end, bad input, and the report's statistics.

The expected numbers are the lab's own printouts (seed text), typed here by hand, not copied from
cnnlab's output.
"""

from __future__ import annotations

import json
import math

import pytest

from cnnlab.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    rc = main(["reproduce", "--out", str(out), "--quick", "--quiet", "--device", "cpu"])
    return rc, out


@pytest.mark.slow
def test_quick_run_writes_every_file(quick_run):
    rc, out = quick_run
    assert rc == 0, (out / "results.json").read_text()[:2000]
    for name in ("report.md", "results.json", "run.json", "edges.png", "predict.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # each training's run directory has the layout of `cnnlab train --out`
    for model in ("lenet", "resnet18-plain", "resnet18"):
        for name in ("best.pt", "history.json", "curves.png", "run.json"):
            assert (out / model / name).is_file(), f"{model}/{name}"
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["quick"] is True
    assert run["environment"]["versions"]["torch"]


@pytest.mark.slow
def test_quick_run_results_match_the_lab(quick_run):
    rc, out = quick_run
    results = json.loads((out / "results.json").read_text())
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

    for model in ("lenet", "resnet18-plain", "resnet18"):
        run = ph[f"train:{model}"]["runs"][0]
        assert 0.0 <= run["test_acc"] <= 1.0 and math.isfinite(run["test_loss"])
        assert run["seed"] == 100
    pred = ph["prediction"]
    assert 0 <= pred["pred"] <= 9 and 0.0 < pred["prob"] <= 1.0
    b = results["budget"]
    assert b["matmul_flops_per_s"] > 0 and b["floor_s"] > 0
    assert b["peak_rss_gb"] > 0


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


def test_matmul_rate_is_positive():
    from cnnlab.report.reproduce import measure_matmul

    m = measure_matmul(n=256, seconds=0.01)
    assert m["flops_per_s"] > 1e6 and m["runs"] >= 3
