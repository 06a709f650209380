"""The training phases of `cnnlab reproduce` (lab 5.3.3-5.4.3), the prediction demo (5.3.5), the
seed statistics, the test of the lab's "residual beats plain" claim, and the time/memory budget.

Each training uses the lab's settings unchanged (SGD, the lab's learning rate per model, batch 64,
5 epochs, log/eval every 15 steps, seed 100, the bundled 1000/200/200 split) through
`cnnlab.train.run.train_run`, so its run directory `DIR/<model>/` (or `DIR/<model>/seed<s>/`)
has the layout of `cnnlab train --out`. The data is loaded once and shared by all trainings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics

from cnnlab.report import lab_figures as lab
from cnnlab.report.markdown_helpers import relative_to

FIRST_SEED = 100
# --quick: 2 steps of batch 32 (the Runner evaluates after step 1, so best.pt exists), 1 epoch.
QUICK_SIZES = (64, 32, 64)   # train/dev/test images
QUICK_EPOCHS = 1
QUICK_BATCH = 32


def seeds_for(options) -> list[int]:
    return [FIRST_SEED + i for i in range(options.seeds)]


def run_dir(options, name: str, seed: int):
    base = options.out / name
    return base if options.seeds == 1 else base / f"seed{seed}"


def _subset(data, sizes):
    """The first n images of each part (quick mode only)."""
    from cnnlab.data import ImageSet, MnistData

    parts = []
    for part, n in zip((data.train, data.dev, data.test), sizes):
        parts.append(ImageSet(part.images[:n], part.labels[:n], part.raw[:n], part.indices[:n]))
    return MnistData(*parts, source=data.source, split=f"{data.split} (quick subset)")


def _train_one(opts, all_data, name: str, seed: int, threads: int | None = None) -> dict:
    """One training with the lab's settings (TrainConfig's per-model defaults) -> its figures.
    A top-level function of plain arguments: `--nproc` runs it in a pool's processes."""
    import json

    from cnnlab.train.config import TrainConfig
    from cnnlab.train.run import train_run

    folder = run_dir(opts, name, seed)
    data = _subset(all_data, QUICK_SIZES) if opts.quick else all_data
    extra = {}
    if opts.quick:
        extra = {"epochs": QUICK_EPOCHS, "batch_size": QUICK_BATCH, "eval_steps": 1, "log_steps": 1}
    config = TrainConfig(model=name, seed=seed, out=str(folder), device=opts.device,
                         quiet=opts.quiet, threads=threads, **extra)
    # The data is loaded once and shared by every training; a run of an earlier reproduce in
    # the same folder is replaced.
    run = train_run(config, data=data, overwrite=True)
    history = json.loads((folder / "history.json").read_text())
    return {
        "model": name, "seed": seed, "run_dir": str(folder),
        "best_dev": run.get("best_dev_score"), "best_step": run.get("best_step"),
        "test_acc": run.get("test_acc"), "test_loss": run.get("test_loss"),
        "wall_s": run.get("wall_s"), "steps": run.get("steps"),
        "n_dev_evals": len(history.get("dev_scores", [])),
        "sizes": {"train": len(data.train), "dev": len(data.dev), "test": len(data.test)},
        "config": config.resolved().to_dict(),
        "phases_s": run.get("phases_s"),
        "tune_s": (run.get("algorithms") or {}).get("tune_s", 0.0),   # the autotuner's timing
    }


@contextlib.contextmanager
def training_pool(options):
    """(a process pool, torch threads per process) for `--nproc P` > 1, else None: P trainings
    at once, each independent and deterministic given its thread count (the cores shared
    evenly; `spawn`: no forked torch state)."""
    if options.nproc <= 1 or options.seeds <= 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    workers = min(options.nproc, options.seeds)
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool, threads


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def training_phase(name: str):
    """The phase function for one model: every seed, then mean +- std over seeds."""

    def phase(ctx) -> dict:
        seeds = seeds_for(ctx.options)
        if ctx.pool is not None and len(seeds) > 1:  # --nproc P: a seed per process
            pool, threads = ctx.pool
            quiet = dataclasses.replace(ctx.options, quiet=True)  # P trainings would interleave
            futures = [pool.submit(_train_one, quiet, ctx.data, name, seed, threads)
                       for seed in seeds]
            runs = [future.result() for future in futures]
        else:
            runs = [_train_one(ctx.options, ctx.data, name, seed) for seed in seeds]
        stats = {}
        for key in ("test_acc", "test_loss", "best_dev", "wall_s"):
            mean, std = _mean_std([r[key] for r in runs])
            stats[key] = {"mean": mean, "std": std}
        first = runs[0]
        spec = lab.TRAININGS[name]
        return {
            "model": name, "title": spec["title"], "lr": spec["lr"], "runs": runs, "stats": stats,
            "lab": spec["lab"], "original": spec["original"], "bar": spec["bar"],
            "bar_met": first["test_acc"] is not None and first["test_acc"] >= spec["bar"],
            "curves": [relative_to(r["run_dir"], ctx.out) + "/curves.png" for r in runs],
        }

    phase.__name__ = f"phase_train_{name.replace('-', '_')}"
    return phase


# --------------------------------------------------------------- "residual beats plain"

def residual_claim(results: dict) -> dict:
    """Test the lab's claim with the test accuracies of the trainings (paired by seed)."""
    phases = results["phases"]
    plain = phases.get("train:resnet18-plain", {}).get("runs")
    resid = phases.get("train:resnet18", {}).get("runs")
    if not plain or not resid:
        return {"verdict": "not run"}
    by_seed = {r["seed"]: r["test_acc"] for r in plain}
    diffs = [r["test_acc"] - by_seed[r["seed"]] for r in resid
             if r["seed"] in by_seed and r["test_acc"] is not None and by_seed[r["seed"]] is not None]
    n_test = resid[0]["sizes"]["test"]
    p = statistics.fmean(r["test_acc"] for r in resid)
    # One test set of n images: the accuracy's own sampling error, whatever the seed.
    binomial_se = math.sqrt(max(p * (1 - p), 1e-12) / max(n_test, 1))
    out = {"n_seeds": len(diffs), "diffs": diffs, "wins": sum(d > 0 for d in diffs),
           "ties": sum(d == 0 for d in diffs), "binomial_se": binomial_se, "n_test": n_test}
    if not diffs:
        out["verdict"] = "not run"
        return out
    mean = statistics.fmean(diffs)
    out["mean_diff"] = mean
    if len(diffs) == 1:
        out["verdict"] = "untested (one run each)"
        return out
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(len(diffs))
    out.update(std_diff=sd, se_diff=se, t=mean / se if se > 0 else math.inf * (1 if mean > 0 else -1))
    if mean > 0 and out["wins"] == len(diffs) and mean > 2 * se:
        out["verdict"] = "supported"
    elif mean <= 0:
        out["verdict"] = "not supported"
    else:
        out["verdict"] = "inconclusive"
    return out


# ------------------------------------------------------------------ 10. prediction (5.3.5)

def phase_prediction(ctx) -> dict:
    """The lab's demo: the first test batch (64, in order), sample 1, with the best LeNet."""
    import torch
    import torch.nn.functional as F

    from cnnlab.train.checkpoint import load_model
    from cnnlab.report.figures import save_prediction_figure

    folder = run_dir(ctx.options, "lenet", FIRST_SEED)
    model, _ = load_model(folder / "best.pt")
    model.eval()
    test = ctx.data.test
    batch = test.images[:64]
    i = lab.PREDICTION["sample"]
    with torch.no_grad():
        probs = F.softmax(model(batch), dim=1)
    pred = int(probs[i].argmax())
    true = int(test.labels[i])
    path = ctx.out / "predict.png"
    save_prediction_figure(test.raw[i].numpy(), true, pred, float(probs[i, pred]), path)
    return {"checkpoint": relative_to(folder / "best.pt", ctx.out), "sample": i, "true": true,
            "pred": pred, "prob": float(probs[i, pred]), "correct": pred == true,
            "image": "predict.png",
            "lab": {"true": lab.PREDICTION["lab_true"], "pred": lab.PREDICTION["lab_pred"]}}


# ---------------------------------------------------------------- time and memory budget

def training_flops(results: dict) -> dict:
    """Arithmetic of the trainings: forward FLOPs per image x (3 for fwd+bwd x train images x
    epochs + 1 x evaluated images). Real FLOPs = 2 x MACs (multiply and add, as a matmul's rate
    counts them) + the lab's other counted ops (bias, BN, pooling)."""
    counting = results["phases"].get("counting", {})
    total, per_model = 0.0, {}
    for name in lab.TRAINING_ORDER:
        phase = results["phases"].get(f"train:{name}", {})
        c = counting.get(name)
        if not phase.get("runs") or not c:
            continue
        per_image = 2 * c["macs"] + (c["flops"] - c["macs"])
        flops = 0.0
        for run in phase["runs"]:
            sizes, epochs = run["sizes"], run["config"]["epochs"]
            flops += per_image * (3 * sizes["train"] * epochs + run["n_dev_evals"] * sizes["dev"]
                                  + sizes["test"])
        per_model[name] = flops
        total += flops
    return {"per_model": per_model, "total": total}


def budget(results: dict) -> dict:
    """Total wall time vs the target (a tenth of the original 820 s), peak RSS vs 1.5 GB, and the
    floor: the trainings' FLOPs over this CPU's matmul FLOP/s."""
    flops = training_flops(results)
    rate = (results["phases"].get("matmul") or {}).get("flops_per_s")
    train_s = sum(t["wall_s"] for t in results["timings"] if t["key"].startswith("train:"))
    floor = flops["total"] / rate if rate else None
    peak_gb = results["resources"]["peak_bytes"] / 1e9
    command_s = results.get("process_wall_s") or results["total_wall_s"]
    # The autotuner's timing of new shapes (cnnlab.ops.autotune), inside the times above: in
    # the trainings (each run's own, whichever process ran it) and in the whole command.
    tuned = [r.get("tune_s") or 0.0 for name in lab.TRAINING_ORDER
             for r in (results["phases"].get(f"train:{name}") or {}).get("runs", [])]
    tuner = results.get("autotune") or {}
    return {
        # the whole command: interpreter start and imports included where the OS tells them
        "total_wall_s": results["total_wall_s"], "command_wall_s": command_s,
        "target_s": lab.TARGET_TOTAL_S, "time_met": command_s <= lab.TARGET_TOTAL_S,
        "original_s": lab.ORIGINAL_TOTAL_S,
        "speedup_vs_original": lab.ORIGINAL_TOTAL_S / command_s,
        "peak_rss_gb": peak_gb, "target_rss_gb": lab.TARGET_RSS_GB,
        "rss_met": peak_gb <= lab.TARGET_RSS_GB, "original_rss_gb": lab.ORIGINAL_PEAK_RSS_GB,
        "training_wall_s": train_s, "training_flops": flops, "matmul_flops_per_s": rate,
        "floor_s": floor, "efficiency": floor / train_s if floor and train_s else None,
        "residual_claim": residual_claim(results),
        "trainings_tune_s": sum(tuned), "tune_s": tuner.get("tune_s"),
        "keys_tuned": tuner.get("keys_tuned"), "autotune_mode": tuner.get("mode"),
    }
