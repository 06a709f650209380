"""`cnnlab reproduce --part 2 --data cifar10:PATH`: part 2 of the lab (ResNet18 on CIFAR-10) with
both recipes, into one folder with a report.

    reproduce_part2(Part2Options(out="runs/reproduce-part2", data="cifar10:data"))  -> results

Phases (each timed; its result goes into results.json under its key):
    data         load and check CIFAR-10 once (the lab split; --quick: the first QUICK_SIZE
                 images of each part), shared by both trainings
    train:lab    the notebook's recipe (`--recipe lab`), run directory DIR/lab/
    train:fast   the fast recipe (`--recipe fast`), run directory DIR/fast/
    test:lab, test:fast   each best model on the test set again, image by image: the confusion
                 matrix, per-class accuracy and a grid of test images with true/predicted names
Then report.md (part2_markdown), results.json and run.json. The folder is locked while the
command runs; an earlier part-2 reproduce's output there is replaced.

--quick is the same pipeline on QUICK_SIZE images per part, 1 epoch, batch QUICK_BATCH (the
learning rate scaled with the batch), an evaluation every QUICK_EVAL steps: a smoke run whose
accuracies mean nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnlab.atomic import DirectoryLock, write_json, write_text
from cnnlab.errors import UserError
from cnnlab.report.markdown_helpers import relative_to
from cnnlab.runinfo import peak_rss_bytes

RECIPE_ORDER = ("lab", "fast")
QUICK_SIZE = 256      # images per part
QUICK_EPOCHS = 1
QUICK_BATCH = 64      # both recipes: 4 steps an epoch, so best.pt exists
QUICK_EVAL = 2
GRID_IMAGES = 24      # test images shown with their true and predicted names


@dataclass
class Part2Options:
    out: Path = Path("runs/reproduce-part2")
    data: str | None = None      # "cifar10:PATH"
    quick: bool = False
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self):
        self.out = Path(self.out)
        if not self.data or not str(self.data).startswith("cifar10:"):
            raise UserError("--part 2 trains on CIFAR-10: give --data cifar10:PATH (get it with "
                            "`cnnlab data fetch cifar10`)")


# ----------------------------------------------------------------------------- phases

def phase_data(ctx) -> dict:
    """The data set was read and checked before the output folder was touched (`load_s`)."""
    from cnnlab.data import subset

    data, load_s = ctx.data
    ctx.data = subset(data, QUICK_SIZE) if ctx.options.quick else data
    return {"source": ctx.options.data, "describe": data.describe(), "load_s": load_s,
            "sizes": {p: len(ctx.data.part(p)) for p in ("train", "dev", "test")},
            "full_sizes": data.sizes, "classes": list(data.classes)}


def training_phase(recipe: str):
    def phase(ctx) -> dict:
        import json

        from cnnlab.train.config import TrainConfig
        from cnnlab.train.recipes import RECIPES
        from cnnlab.train.run import train_run

        opts = ctx.options
        folder = opts.out / recipe
        extra = {}
        if opts.quick:
            # The fast recipe's peak lr is for its batch of 512: scaled with the batch here.
            lr = RECIPES[recipe]["lr"] * QUICK_BATCH / RECIPES[recipe]["batch_size"]
            extra = {"epochs": QUICK_EPOCHS, "batch_size": QUICK_BATCH, "eval_steps": QUICK_EVAL,
                     "log_steps": 1, "lr": lr}
        config = TrainConfig(data=opts.data, recipe=recipe, out=str(folder), device=opts.device,
                             quiet=opts.quiet, **extra)
        cfg = config.resolved()
        run = train_run(cfg, data=ctx.data, overwrite=True)  # data shared, loaded once
        history = json.loads((folder / "history.json").read_text())
        return {"recipe": recipe, "run_dir": relative_to(folder, opts.out),
                "config": cfg.to_dict(), "results": {k: v for k, v in run.items()
                                                     if k not in ("files", "run_dir")},
                "history": history, "curves": relative_to(folder / "curves.png", opts.out)}

    phase.__name__ = f"phase_train_{recipe}"
    return phase


def test_phase(recipe: str):
    def phase(ctx) -> dict:
        return analyse_test_set(ctx, recipe)

    phase.__name__ = f"phase_test_{recipe}"
    return phase


def analyse_test_set(ctx, recipe: str) -> dict:
    """The recipe's best.pt on every test image: predictions -> confusion matrix, per-class
    accuracy, figures confusion_<recipe>.png and samples_<recipe>.png."""
    import torch
    import torch.nn.functional as F

    from cnnlab.data import TensorLoader
    from cnnlab.report.part2_plots import (confusion_matrix, save_confusion_figure,
                                           save_sample_grid)
    from cnnlab.train.checkpoint import load_model
    from cnnlab.train.metric import Accuracy
    from cnnlab.train.recipes import configure_evaluation
    from cnnlab.train.runner import Runner

    folder = ctx.out / recipe
    model, payload = load_model(folder / "best.pt")
    config = payload.get("config") or {}
    runner = Runner(model, None, F.cross_entropy, Accuracy(), device=ctx.options.device,
                    progress=False, log=False)
    test = ctx.data.test
    configure_evaluation(runner, config, test.images)
    preds = [runner.predict(x).argmax(dim=1).cpu()
             for x, _ in TensorLoader(test, config.get("batch_size") or 64)]
    preds = torch.cat(preds).numpy()
    labels = test.labels.cpu().numpy()
    names = list(ctx.data.classes)
    matrix = confusion_matrix(labels, preds, len(names))
    totals = matrix.sum(axis=1)
    per_class = [float(matrix[k, k] / totals[k]) if totals[k] else None for k in range(len(names))]
    title = f"{recipe} recipe, best model: test set ({len(labels):,} images)"
    save_confusion_figure(matrix, names, title, ctx.out / f"confusion_{recipe}.png")
    n = min(GRID_IMAGES, len(labels))
    save_sample_grid(test.raw[:n].cpu().numpy(), labels[:n], preds[:n], names,
                     f"{recipe} recipe: the first {n} test images", ctx.out / f"samples_{recipe}.png")
    return {"recipe": recipe, "n": int(len(labels)), "accuracy": float((preds == labels).mean()),
            "tta": runner.tta, "confusion": matrix.tolist(), "per_class": per_class,
            "classes": names, "confusion_png": f"confusion_{recipe}.png",
            "samples_png": f"samples_{recipe}.png"}


PHASES = [
    ("data", "Load CIFAR-10 (the notebook's split)", phase_data),
    ("train:lab", "Training with the lab recipe (the notebook exactly)", training_phase("lab")),
    ("train:fast", "Training with the fast recipe", training_phase("fast")),
    ("test:lab", "Test set, image by image: lab recipe", test_phase("lab")),
    ("test:fast", "Test set, image by image: fast recipe", test_phase("fast")),
]


# ----------------------------------------------------------------------------- driver

def reproduce_part2(options: Part2Options) -> dict:
    """Run every phase, write report.md / results.json / run.json into options.out -> results."""
    from cnnlab.data import load_data
    from cnnlab.report.reproduce import check_out
    from cnnlab.train.device import resolve_device

    # A missing GPU, a missing or damaged data set: one line, exit 2, before any output.
    resolve_device(options.device)
    t = time.perf_counter()
    data = load_data(options.data, "lab")
    loaded = (data, time.perf_counter() - t)
    check_out(options.out)
    with DirectoryLock(options.out):
        return _run_phases(options, loaded)


def _run_phases(options: Part2Options, loaded) -> dict:
    from rich.console import Console

    from cnnlab.report.part2_markdown import render_report
    from cnnlab.report.reproduce import Context, environment, run_phases

    started = time.perf_counter()
    ctx = Context(options, Console(quiet=options.quiet), data=loaded)
    timings = run_phases(ctx, PHASES)
    results = {"format": "cnnlab.reproduce.part2", "version": 1,
               "options": {**asdict(options), "out": str(options.out)},
               "phases": ctx.results, "timings": timings,
               "total_wall_s": time.perf_counter() - started,
               "resources": {"peak_bytes": peak_rss_bytes()}, "environment": environment()}
    out = options.out
    write_json(out / "results.json", results)
    write_json(out / "run.json", {"command": "cnnlab reproduce --part 2",
                                  "config": results["options"],
                                  "total_wall_s": results["total_wall_s"],
                                  "resources": results["resources"],
                                  "environment": results["environment"]})
    write_text(out / "report.md", render_report(results))
    if not options.quiet:
        ctx.console.print(summary_table(results))
    ctx.say(f"[bold]report[/]: {out / 'report.md'}  ({results['total_wall_s']:.1f} s)")
    return results


def summary_table(results):
    """The headline figures for the terminal, beside the notebook's."""
    from rich.table import Table

    from cnnlab.report import lab_figures as lab
    from cnnlab.report.markdown_helpers import fmt

    table = Table(title="cnnlab reproduce --part 2" + (" --quick" if results["options"]["quick"]
                                                       else ""))
    for col in ("", "lab recipe", "notebook", "fast recipe", "goal"):
        table.add_column(col, justify="left" if not col else "right")
    runs = {r: (results["phases"].get(f"train:{r}") or {}).get("results") or {}
            for r in RECIPE_ORDER}
    note = lab.PART2_NOTEBOOK
    table.add_row("best dev acc", fmt(runs["lab"].get("best_dev_score")), fmt(note["best_dev"]),
                  fmt(runs["fast"].get("best_dev_score")), "")
    table.add_row("test acc", fmt(runs["lab"].get("test_acc")), fmt(note["test_acc"]),
                  fmt(runs["fast"].get("test_acc")), f"≥ {lab.PART2_GOAL['test_acc']:.2f}")
    table.add_row("test loss", fmt(runs["lab"].get("test_loss")), fmt(note["test_loss"]),
                  fmt(runs["fast"].get("test_loss")), "")
    table.add_row("train img/s", fmt(runs["lab"].get("train_images_per_s"), 0), "",
                  fmt(runs["fast"].get("train_images_per_s"), 0), "")
    table.add_row("wall time", f"{fmt(runs['lab'].get('wall_s'), 1)} s", "",
                  f"{fmt(runs['fast'].get('wall_s'), 1)} s", "")
    return table
