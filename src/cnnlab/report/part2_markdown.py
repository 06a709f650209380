"""Render results.json of `cnnlab reproduce --part 2` as report.md: both recipes' figures beside
the notebook's printed ones (lab_figures.PART2_*), curves, per-class accuracy, confusion
matrices, test images with their names, throughput and the device, and what differs from the
notebook. `render_report(results) -> str`."""

from __future__ import annotations

from cnnlab.report import lab_figures as lab
from cnnlab.report.markdown_helpers import MISSING, fmt, mark, report_header, table

TITLES = {"lab": "The lab recipe (the notebook exactly)", "fast": "The fast recipe"}


def render_report(results: dict) -> str:
    phases = results["phases"]
    out = [_title(results), _summary(results), "## Data\n", _data(phases.get("data")),
           f"## {TITLES['lab']}\n", _recipe(phases, "lab"),
           f"## {TITLES['fast']}\n", _recipe(phases, "fast"),
           "## Per-class test accuracy\n", _per_class(phases),
           "## Confusion matrices and test images\n", _figures(phases),
           "## Throughput and device\n", _throughput(results),
           "## What differs from the notebook\n", _differences(phases)]
    return "\n".join(part.rstrip() + "\n" for part in out)


def _runs(phases) -> dict:
    return {r: (phases.get(f"train:{r}") or {}).get("results") or {} for r in ("lab", "fast")}


def _title(results) -> str:
    opts, env = results["options"], results.get("environment", {})
    cmd = f"cnnlab reproduce --part 2 --data {opts['data']} --out {opts['out']}"
    cmd += " --quick" if opts.get("quick") else ""
    quick = ("a few hundred images of each part and 1 epoch, so the accuracies below are NOT "
             "comparable with the notebook's. Run without `--quick` for the real reproduction.")
    return report_header(
        "# The NNDL chapter-5 lab, part 2 (实验5(下)): ResNet18 on CIFAR-10, re-run with cnnlab",
        cmd, quick if opts.get("quick") else None, env,
        f"Each figure of the lab recipe is shown beside **the notebook's printed one** and the "
        f"printed book's ({lab.PART2_SOURCE}).")


def _summary(results) -> str:
    runs = _runs(results["phases"])
    lab_run, fast_run = runs["lab"], runs["fast"]
    note, book, goal = lab.PART2_NOTEBOOK, lab.PART2_BOOK, lab.PART2_GOAL
    fast_acc = fast_run.get("test_acc")
    rows = [
        ["best dev accuracy", fmt(lab_run.get("best_dev_score")), fmt(note["best_dev"]), MISSING,
         fmt(fast_run.get("best_dev_score")), ""],
        ["test accuracy", fmt(lab_run.get("test_acc")), fmt(note["test_acc"]),
         fmt(book["test_acc"]), fmt(fast_acc),
         f"≥ {goal['test_acc']:.2f} in {goal['epochs']} epochs: "
         f"{mark(None if fast_acc is None else fast_acc >= goal['test_acc'])}"],
        ["test loss", fmt(lab_run.get("test_loss")), fmt(note["test_loss"]),
         fmt(book["test_loss"]), fmt(fast_run.get("test_loss")), ""],
        ["training steps", fmt(lab_run.get("steps")), "18,750 (30 epochs)", MISSING,
         fmt(fast_run.get("steps")), ""],
        ["wall time (whole run)", _seconds(lab_run.get("wall_s")), MISSING, MISSING,
         _seconds(fast_run.get("wall_s")), f"≤ {goal['h200_s']:.0f} s on one H200"],
        ["training throughput", _rate(lab_run), MISSING, MISSING, _rate(fast_run), ""],
    ]
    return "\n".join(["## Summary", "", table(
        ["", "cnnlab, lab recipe", "notebook (printed)", "book (printed)", "cnnlab, fast recipe",
         "fast recipe's goal"], rows), "",
        "The fast recipe's loss is the plain cross-entropy of its flip-TTA logits (it trains "
        "with label smoothing 0.2); its goal is the issue's (>= 94 % in 20 epochs, the whole "
        "training <= 30 s on one H200).", ""])


def _seconds(value) -> str:
    return MISSING if value is None else f"{value:,.1f} s"


def _rate(run) -> str:
    rate = run.get("train_images_per_s")
    return MISSING if rate is None else f"{rate:,.0f} img/s on {run.get('device', MISSING)}"


def _data(phase) -> str:
    if not phase or "error" in phase:
        return _failed(phase)
    sizes, full = phase["sizes"], phase["full_sizes"]
    used = " / ".join(f"{k} {v:,}" for k, v in sizes.items())
    return (f"{phase['describe']}; read and checked in {phase['load_s']:.2f} s. Split as the "
            f"notebook: data_batch_1..4 → train, data_batch_5 → dev, test_batch → test. Used: "
            f"{used} images" + ("" if sizes == full else " (a subset)") + ". Classes: "
            + ", ".join(phase["classes"]) + ".\n")


def _failed(phase) -> str:
    if phase is None:
        return "_Not run._\n"
    return f"_This phase failed_: `{phase.get('error')}`\n"


SETTING_ROWS = [("model", "model"), ("optimizer", "optimizer"), ("lr", "learning rate (peak)"),
                ("momentum", "momentum"), ("nesterov", "Nesterov"),
                ("weight_decay", "weight decay (L2)"), ("batch_size", "batch size"),
                ("epochs", "epochs"), ("schedule", "schedule"), ("warmup", "warm-up fraction"),
                ("label_smoothing", "label smoothing"), ("augment", "augmentation"),
                ("normalize", "normalisation"), ("amp", "precision (autocast)"),
                ("channels_last", "channels-last"), ("tta", "flip TTA at evaluation"),
                ("weight_init", "initialisation"), ("eval_steps", "evaluate every (steps)"),
                ("seed", "seed"), ("subset", "subset (images per part)")]


def _recipe(phases, recipe: str) -> str:
    phase = phases.get(f"train:{recipe}")
    if not phase or "error" in phase:
        return _failed(phase)
    cfg, run = phase["config"], phase["results"]
    rows = [[label, f"{cfg[key]:g}" if isinstance(cfg[key], float) else fmt(cfg[key])]
            for key, label in SETTING_ROWS if cfg.get(key) is not None]
    out = [f"Run directory `{phase['run_dir']}/` (the layout of `cnnlab train --out`; "
           f"`cnnlab train --recipe {recipe} --data ...` repeats it).", "",
           table(["setting", "value"], rows), "",
           f"Best dev accuracy {fmt(run.get('best_dev_score'))} at step "
           f"{fmt(run.get('best_step'))} (the model tested: {run.get('tested_model')}); test "
           f"accuracy {fmt(run.get('test_acc'))}, loss {fmt(run.get('test_loss'))} on "
           f"{fmt(run.get('test_n'))} images.", "",
           f"![{recipe} recipe: loss and dev accuracy]({phase['curves']})", ""]
    if recipe == "lab":
        out += ["The notebook's printed run: best dev 0.7272, test 0.7234 / loss 0.8324; the "
                "printed book: test 0.7094 / loss 0.9058.", ""]
    else:
        out += ["Anchors for this recipe (reference.md): "
                + "; ".join(f"{name}: {what}" for name, what in lab.PART2_ANCHORS) + ".", ""]
    return "\n".join(out)


def _per_class(phases) -> str:
    tests = {r: phases.get(f"test:{r}") or {} for r in ("lab", "fast")}
    names = next((t["classes"] for t in tests.values() if "classes" in t), None)
    if names is None:
        return "_Not run._\n"
    rows = []
    for k, name in enumerate(names):
        rows.append([name] + [fmt(t["per_class"][k]) if "per_class" in t else MISSING
                              for t in tests.values()])
    rows.append(["**all**"] + [fmt(t.get("accuracy")) for t in tests.values()])
    return (table(["class", "lab recipe", "fast recipe"], rows) + "\n\nEach best model on the "
            "test set, image by image (the fast recipe with flip TTA, as it evaluates).\n")


def _figures(phases) -> str:
    out = []
    for recipe in ("lab", "fast"):
        t = phases.get(f"test:{recipe}") or {}
        if "confusion_png" not in t:
            out.append(f"{recipe} recipe: " + _failed(phases.get(f"test:{recipe}")))
            continue
        out += [f"![{recipe} recipe: confusion matrix (rows: true class)]({t['confusion_png']})",
                "", f"![{recipe} recipe: test images, true / predicted]({t['samples_png']})", ""]
    return "\n".join(out)


def _throughput(results) -> str:
    runs = _runs(results["phases"])
    env = results.get("environment", {})
    rows = []
    for recipe, run in runs.items():
        phases_s = run.get("phases_s") or {}
        rows.append([recipe, fmt(run.get("train_images_per_s"), 0),
                     str(run.get("device", MISSING)), _seconds(phases_s.get("train_s"))])
    gpu = (env.get("cuda") or {}).get("device")
    return (table(["recipe", "training img/s", "device", "training phase"], rows) + "\n\n"
            "Images per second of the training steps alone (dev evaluations and checkpoint "
            "saves left out). Device: " + (f"GPU {gpu}" if gpu else
                                            f"CPU ({env.get('cpu', MISSING)}), no GPU") + ".\n")


def _differences(phases) -> str:
    return "\n".join([
        "- **10 classes, not 1000.** The notebook built `paddle.vision.models.resnet18()` "
        "without `num_classes=10` and trained a 1000-way head: 990 outputs that are never a "
        "label, which the softmax still spreads probability over (and the argmax could pick). "
        "cnnlab's `resnet18-vision` has 10 outputs; a `.pdparams` file of the notebook's "
        "1000-way model still loads (`--model resnet18-vision`).",
        "- PyTorch instead of PaddlePaddle: the same architecture (torchvision's names), "
        "Paddle's default initialisation (`--weight-init lab`), Adam with L2 weight decay as "
        "Paddle's, BatchNorm momentum 0.1 (Paddle's 0.9 is the same average); float reduction "
        "orders differ.",
        "- Losses are averaged over images (the notebook averages over batches, which "
        "over-weights a short last batch).",
        "- The best model is chosen on the dev set (data_batch_5), as the notebook does; the test "
        "set is used once, for the figures above.",
        "- The fast recipe is cnnlab's own (not in the notebook): see `cnnlab train --help`.",
        ""])
