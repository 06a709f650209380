"""The fast operators' algorithms in a training run (issue 13, stage 2; cnnlab.train.algorithms):
run.json names each layer's, checkpoints record them, --resume pins them, --deterministic and
data-parallel runs use the rules.

LeNet on cnnlab's fast operators, tiny synthetic data (96/32/32 images, batch 16), in this
process with one torch thread. The tuner is on with a fake timer (test_autotune.FakeTimer): its
cost table decides, so the choice is known without a clock. `autotune.reset()` between runs
stands for a fresh process (the tuner's memory gone, its disk cache kept).
"""

import json
import shutil

import pytest
import torch

from cnnlab.ops import autotune, fast_conv, fast_pool
from cnnlab.train.algorithms import RunAlgorithms
from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train.config import TrainConfig
from test_autotune import FakeTimer, never
from train_helpers import assert_same_run, cli, load_json_strict, make_json, one_thread, run_quietly

COMMON = ["--batch-size", "16", "--eval-steps", "5", "--log-steps", "0"]
# im2col and the "views" pooling path cheapest: not what the rules pick for LeNet's layers
# (unfold, matmul, tiles), so a record that came from the rules cannot pass for the tuner's.
COSTS = {"im2col": 0.001, "views": 0.001}


def expected_keys(batch=16):
    """LeNet's problem keys on 1x32x32 images, written out by hand (autotune's key format)."""
    convs = {"conv1": ("1x32x32", "6x1x5x5"), "conv3": ("6x14x14", "16x6x5x5"),
             "conv5": ("16x5x5", "120x16x5x5")}
    grads = {"conv1": "w,b", "conv3": "x,w,b", "conv5": "x,w,b"}     # conv1: no dx
    train = {name: f"conv2d float32 nchw x{batch}x{x} w{w} s1x1 p0x0 grad:{grads[name]}"
             for name, (x, w) in convs.items()}
    train["pool4"] = f"pool2d:avg float32 nchw x{batch}x16x10x10 k2x2 s2x2 p0x0 grad:x"
    evaluation = {name: f"conv2d float32 nchw x{batch}x{x} w{w} s1x1 p0x0 grad:none"
                  for name, (x, w) in convs.items()}
    return train, evaluation


def layers(run_dir):
    return load_json_strict(run_dir / "run.json")["results"]["algorithms"]


def fresh_process(timer):
    """What a new `cnnlab train` process starts with: no tuner memory, the disk cache kept."""
    autotune.reset()
    autotune.set_timer(timer)


def rewrite_cache_to_prefer_others():
    """Every cached entry now names another algorithm that applies to its key (one it timed)."""
    path = autotune.cache_path()
    saved = json.loads(path.read_text())
    for entry in saved["entries"].values():
        entry["algorithm"] = min(a for a in entry["ms"] if a != entry["algorithm"])
    path.write_text(json.dumps(saved))


def other_rules(rules):
    """Rules that pick im2col where the given ones do not, else unfold."""
    def choose(x_shape, w_shape, geo, channels_last=False):
        return "unfold" if rules(x_shape, w_shape, geo, channels_last) == "im2col" else "im2col"
    return choose


def without_record(last_pt):
    """last.pt as cnnlab wrote it before it recorded algorithms."""
    payload = load_checkpoint(last_pt)
    del payload["algorithms"]
    save_checkpoint(last_pt, payload)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every training of this module, run once: {name: run directory, or a value}."""
    tmp = tmp_path_factory.mktemp("algorithms")
    data = make_json(tmp / "tiny.json")
    base = ["train", "lenet", "--data", data, *COMMON]
    r = {"tmp": tmp}
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("CNNLAB_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("CNNLAB_AUTOTUNE", "on")
        try:
            # Tuned: an uninterrupted 2-epoch run, and a 1-epoch run to resume.
            timer = FakeTimer(COSTS)
            fresh_process(timer)
            assert run_quietly(*base, "--epochs", 2, "--out", tmp / "straight") == 0
            r["measured"] = autotune.measurements()
            r["timed"] = timer.total
            r["cache"] = json.loads(autotune.cache_path().read_text())["entries"]
            fresh_process(never)                          # the cache has every key now
            assert run_quietly(*base, "--epochs", 1, "--out", tmp / "resumed") == 0
            shutil.copytree(tmp / "resumed", tmp / "control")
            without_record(tmp / "control" / "last.pt")
            # The cache changes between the two halves; the resumed run pins its own choices.
            rewrite_cache_to_prefer_others()
            r["rewritten"] = {k.split(" | ")[1]: e["algorithm"] for k, e in
                              json.loads(autotune.cache_path().read_text())["entries"].items()}
            for name in ("resumed", "control"):
                fresh_process(never)
                assert run_quietly("train", "lenet", "--epochs", 2, "--resume", tmp / name) == 0
            # --deterministic with a cache that prefers other algorithms: the rules.
            det = [*base, "--deterministic"]
            for name, epochs in (("det", 1), ("det_straight", 2)):
                fresh_process(never)
                assert run_quietly(*det, "--epochs", epochs, "--out", tmp / name) == 0
            shutil.copytree(tmp / "det", tmp / "det_resumed")
            shutil.copytree(tmp / "det", tmp / "det_control")
            without_record(tmp / "det_control" / "last.pt")
            # A deterministic run ignores the cache: its resume needs its record when the rules
            # change (another cnnlab version): here to what the rules did not pick before.
            with pytest.MonkeyPatch.context() as rules:
                rules.setattr(fast_conv, "choose_algorithm",
                              other_rules(fast_conv.choose_algorithm))
                rules.setattr(fast_pool, "AVG_ALGORITHMS", fast_pool.AVG_ALGORITHMS[::-1])
                for name in ("det_resumed", "det_control"):
                    fresh_process(never)
                    assert run_quietly("train", "lenet", "--epochs", 2, "--deterministic",
                                       "--resume", tmp / name) == 0
            mp.setenv("CNNLAB_AUTOTUNE", "off")
            fresh_process(never)
            assert run_quietly(*base, "--epochs", 1, "--out", tmp / "off") == 0
            # the next training in the same process (as `cnnlab reproduce` runs them)
            assert run_quietly(*base, "--epochs", 1, "--batch-size", 32, "--out",
                               tmp / "next") == 0
        finally:
            autotune.reset()
    return r


def test_run_json_names_every_fast_layers_algorithm_as_the_tuner_chose_it(runs):
    record = layers(runs["tmp"] / "straight")
    assert record["mode"] == "on" and record["keys_tuned"] >= 9 and runs["timed"] > 0
    train, evaluation = expected_keys()
    # pool2 is max pooling (one path) and pooling in evaluation has no backward: no choice
    assert set(record["layers"]) == {"conv1", "conv3", "conv5", "pool4"}
    for name, rows in record["layers"].items():
        seen = {row["pass"]: row["key"] for row in rows if " x16x" in row["key"]}  # batch 16
        assert seen["train"] == train[name]
        assert seen.get("eval") == evaluation.get(name)
        for row in rows:
            cached = [e for k, e in runs["cache"].items() if k.endswith(" | " + row["key"])]
            chosen = runs["measured"][row["key"]]["algorithm"]
            assert row["algorithm"] == chosen == cached[0]["algorithm"], row
            assert row["source"] == "tuned"
            assert chosen == ("views" if name == "pool4" else "im2col")   # the cheapest
    # the rules would have picked otherwise: a record from the rules could not pass
    assert any(runs["measured"][row["key"]]["rule"] != row["algorithm"]
               for rows in record["layers"].values() for row in rows)


def test_checkpoints_record_the_choices_in_the_form_pin_takes(runs):
    for name in ("best.pt", "last.pt"):
        recorded = load_checkpoint(runs["tmp"] / "straight" / name)["algorithms"]
        for rows in layers(runs["tmp"] / "straight")["layers"].values():
            for row in rows:
                assert recorded[row["key"]] == {"algorithm": row["algorithm"], "source": "tuned"}
    # last.pt's record, pinned, decides the algorithm
    x = torch.zeros(16, 6, 14, 14, requires_grad=True)          # conv3's training call
    w, b = torch.zeros(16, 6, 5, 5, requires_grad=True), torch.zeros(16, requires_grad=True)
    key = autotune.conv_key(x, w, b)
    autotune.reset()
    try:
        with autotune.pinned(recorded):
            fast_conv.conv2d(x, w, b)
        assert autotune.decisions()[key] == {"algorithm": "im2col", "source": "pinned"}
    finally:
        autotune.reset()


@pytest.mark.parametrize("first", ["resumed", "det_resumed"], ids=["tuned", "deterministic"])
def test_resume_pins_the_recorded_algorithms_bit_for_bit_after_the_choice_changed(runs, first):
    """Tuned: the cache now prefers other algorithms; --deterministic: the rules changed."""
    tmp, straight = runs["tmp"], first.replace("resumed", "straight")
    assert_same_run(tmp / straight, tmp / first)
    resumed, before = layers(tmp / first), layers(tmp / straight)
    assert resumed["pinned_from_checkpoint"] > 0 and resumed["keys_tuned"] == 0
    rows = [row for rs in resumed["layers"].values() for row in rs]
    assert rows and all(row["source"] == "pinned" for row in rows)
    assert resumed["layers"] == {n: [{**row, "source": "pinned"} for row in rs]
                                 for n, rs in before["layers"].items()}
    # a resumed run's record keeps the first half's choices and where they came from
    recorded = load_checkpoint(tmp / first / "last.pt")["algorithms"]
    assert {row["key"]: row["algorithm"] for row in rows} == \
        {k: d["algorithm"] for k, d in recorded.items() if k in {row["key"] for row in rows}}
    assert {d["source"] for d in recorded.values()} == {"cache" if first == "resumed" else "rule"}


@pytest.mark.parametrize("first", ["resumed", "det_resumed"], ids=["tuned", "deterministic"])
def test_the_control_without_a_record_would_run_other_algorithms(runs, first):
    control = layers(runs["tmp"] / first.replace("resumed", "control"))
    pinned = {row["key"]: row["algorithm"]
              for rows in layers(runs["tmp"] / first)["layers"].values() for row in rows}
    rows = [row for rs in control["layers"].values() for row in rs]
    assert rows and all(row["source"] == ("cache" if first == "resumed" else "rule")
                        for row in rows)
    assert all(row["algorithm"] != pinned[row["key"]] for row in rows)


def test_a_fresh_deterministic_run_uses_the_rules_whatever_the_cache_prefers(runs):
    det = layers(runs["tmp"] / "det")
    assert det["mode"] == "off" and det["mode_set_by"] == "--deterministic"
    rows = [row for rs in det["layers"].values() for row in rs]
    assert rows and all(row["source"] == "rule" for row in rows)
    chosen = {row["key"]: row["algorithm"] for row in rows}
    assert chosen == {row["key"]: row["algorithm"]
                      for rs in layers(runs["tmp"] / "off")["layers"].values() for row in rs}
    # the rules' choice as the tuner noted it beside its own, not what the cache said then
    assert all(algo == runs["measured"][key]["rule"] for key, algo in chosen.items())
    assert any(algo != runs["rewritten"][key] for key, algo in chosen.items())
    a, b = (load_checkpoint(runs["tmp"] / n / "last.pt")["state_dict"] for n in ("det", "off"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_training_records_only_its_own_choices(runs):
    recorded = load_checkpoint(runs["tmp"] / "next" / "last.pt")["algorithms"]
    batches = {key.split(" ")[3].split("x")[1] for key in recorded}
    assert batches == {"32", "1"}      # its batches, and the one-image check of the data


def test_a_corrupt_recorded_field_is_one_line_and_exit_2(runs, tmp_path, capsys):
    shutil.copytree(runs["tmp"] / "resumed", tmp_path / "run",
                    ignore=shutil.ignore_patterns(".lock"))
    last = tmp_path / "run" / "last.pt"
    payload = load_checkpoint(last)
    key = next(iter(payload["algorithms"]))
    for bad in ({key: {"algorithm": "fastest", "source": "tuned"}}, [key], {key: "im2col"}):
        payload["algorithms"] = bad
        save_checkpoint(last, payload)
        code, out, err = cli(capsys, "train", "lenet", "--epochs", 3, "--resume", last)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "field algorithms" in err and str(last) in err, err


def test_data_parallel_uses_the_rules_unless_resumed_with_a_record(monkeypatch):
    monkeypatch.setenv("CNNLAB_AUTOTUNE", "on")
    cfg = TrainConfig(model="lenet").resolved()
    x = torch.zeros(16, 6, 14, 14, requires_grad=True)
    w, b = torch.zeros(16, 6, 5, 5, requires_grad=True), torch.zeros(16, requires_grad=True)
    key = autotune.conv_key(x, w, b)
    rule = fast_conv.choose_algorithm(x.shape, w.shape, fast_conv.geometry(
        x.shape, w.shape, (1, 1), (0, 0)), False)
    other = "im2col" if rule != "im2col" else "unfold"
    record = {key: {"algorithm": other, "source": "tuned"}}
    autotune.reset()
    autotune.set_timer(never)
    try:
        for resume, expected in ((None, (rule, "rule")), ({"algorithms": record},
                                                         (other, "pinned"))):
            with RunAlgorithms(cfg, resume, dist=object()) as run:
                fast_conv.conv2d(x, w, b)
                assert run.mode == "off" and run.mode_set_by == "data-parallel"
                assert autotune.decisions()[key] == dict(zip(("algorithm", "source"), expected))
            assert autotune.mode() == "on" and autotune.pin({}) == {}   # all undone after
    finally:
        autotune.reset()
