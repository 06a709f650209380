"""The autotuner's figures: tuned vs untuned vs native, every candidate's time, the LeNet step.

- `measure_tuned`: per shape, three sides in rotated rounds (see speed.rotated): torch's kernel,
  our op with the tuner off (the rules of fast_conv.choose_algorithm) and with it on (its first
  call, in the warm-up, tunes the shape). Ratios are medians of per-round ratios.
- `measure_candidates`: every applicable algorithm of each conv shape timed by one thorough
  tuning (`autotune.retuning`), F.conv2d timed in the same interleaved rounds.
- `measure_models_tuned`: a training step of LeNet (and the fast ResNets) on each side.
The shapes are speed.conv_shapes(); by default a model's first layer computes no dx, as in
training. Start from an empty cache directory for figures of a fresh tuning (benchmarks do).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile

import torch

from cnnlab.analysis import speed
from cnnlab.ops import autotune

SIDES = ("native", "untuned", "tuned")


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values))


def summarize(rows) -> dict:
    """rows + geometric mean and worst of tuned/native and untuned/native, worst tuned/untuned."""
    return {"rows": rows,
            "geomean": _geomean(r["ratio"] for r in rows),
            "worst": max(r["ratio"] for r in rows),
            "untuned_geomean": _geomean(r["untuned_ratio"] for r in rows),
            "untuned_worst": max(r["untuned_ratio"] for r in rows),
            "worst_gain": max(r["gain"] for r in rows)}


def _three_way(label, where, steps, device, reps, quick, key=None, untuned="-"):
    """One row; `key`: the tuner's key of the shape, whose entry names the rule's and the tuned
    choice (`untuned` names the path where nothing was tuned)."""
    rounds = speed.rotated(steps, device, reps=3 if quick else reps,
                           budget_s=2.0 if quick else 8.0)      # the warm-up tunes "tuned"
    entry = autotune.measurements().get(key, {})
    return {"shape": label, "where": where,
            **{f"{s}_ms": 1e3 * speed.median_of(rounds, s) for s in SIDES},
            "ratio": speed.median_of(rounds, "tuned", "native"),
            "untuned_ratio": speed.median_of(rounds, "untuned", "native"),
            "gain": speed.median_of(rounds, "tuned", "untuned"),
            "rule": entry.get("rule", untuned), "algorithm": entry.get("algorithm", untuned),
            "tune_ms": 1e3 * entry.get("tune_s", 0.0)}


def measure_tuned(batch=64, device="cpu", reps=5, quick=False, shapes=None,
                  dx_first=False) -> dict:
    """Conv forward+backward per shape: native, fast untuned, fast tuned (see the module)."""
    dev = torch.device(device)
    rows = []
    for shape in shapes or speed.conv_shapes():
        steps = {"native": speed.conv_step(shape, "native", batch, dev, dx_first=dx_first),
                 "untuned": speed.conv_step(shape, "fast", batch, dev, dx_first=dx_first,
                                            tuner="off"),
                 "tuned": speed.conv_step(shape, "fast", batch, dev, dx_first=dx_first,
                                          tuner="on")}
        rows.append(_three_way(shape.label(), shape.where, steps, dev, reps, quick,
                               speed.conv_key(shape, batch, dx_first)))
    return summarize(rows)


def measure_tuned_pool(batch=64, device="cpu", reps=7, quick=False) -> dict:
    """Pooling forward+backward per shape: native, fast untuned, fast tuned."""
    dev = torch.device(device)
    rows = []
    for shape in speed.pool_shapes():
        steps = {"native": speed.pool_step(shape, "native", batch, dev),
                 "untuned": speed.pool_step(shape, "fast", batch, dev, tuner="off"),
                 "tuned": speed.pool_step(shape, "fast", batch, dev, tuner="on")}
        x = torch.empty(batch, shape.c, shape.h, shape.h, device="meta", requires_grad=True)
        key = autotune.pool_key(x, (shape.k,) * 2, (shape.s,) * 2, (shape.pad,) * 2, shape.mode)
        rows.append(_three_way(shape.label(), shape.where, steps, dev, reps, quick, key,
                               "taps" if shape.mode == "max" else "views"))
    return summarize(rows)


def measure_candidates(batch=64, device="cpu", shapes=None, dx_first=False,
                       rounds=autotune.THOROUGH) -> dict:
    """Every applicable algorithm per conv shape, timed interleaved with F.conv2d.

    Rows: shape, where, native_ms, ms {algorithm: ms}, ratios {algorithm: ms / native_ms},
    errors, algorithm (the fastest), rule (the rules' choice)."""
    dev = torch.device(device)
    rows = []
    for shape in shapes or speed.conv_shapes():
        step = speed.conv_step(shape, "fast", batch, dev, dx_first=dx_first, tuner="on")
        with autotune.retuning(rounds):
            step()
        e = autotune.measurements()[speed.conv_key(shape, batch, dx_first)]
        rows.append({"shape": shape.label(), "where": shape.where, "native_ms": e["native_ms"],
                     "ms": e["ms"], "ratios": {a: t / e["native_ms"] for a, t in e["ms"].items()},
                     "errors": e["errors"], "algorithm": e["algorithm"], "rule": e["rule"]})
    return {"rows": rows}


def measure_models_tuned(batch=64, device="cpu", reps=5, quick=False, names=("lenet",)) -> dict:
    """One SGD training step: the model on torch's layers, on ours untuned, on ours tuned."""
    from cnnlab.models import build_model

    dev = torch.device(device)
    rows = []
    for label, fast_name, native_name, kwargs in speed.MODEL_PAIRS:
        if names and label not in names:
            continue
        torch.manual_seed(0)
        fast = build_model(fast_name, **kwargs).to(dev)
        untuned = build_model(fast_name, **kwargs).to(dev)
        native = build_model(native_name).to(dev)
        for m in (untuned, native):
            m.load_state_dict(fast.state_dict())
        steps = {"native": speed.train_step(native, batch, dev),
                 "untuned": _under("off", speed.train_step(untuned, batch, dev)),
                 "tuned": _under("on", speed.train_step(fast, batch, dev))}
        before = autotune.stats()["tune_s"]
        row = _three_way(label, f"{fast_name} {kwargs} vs {native_name}", steps, dev,
                         reps, quick, untuned="train step")
        row["tune_ms"] = 1e3 * (autotune.stats()["tune_s"] - before)
        rows.append(row)
    return summarize(rows)


def _under(mode, step):
    def run():
        with autotune.using(mode):
            step()
    return run


def format_tuned(title, table) -> str:
    lines = [title, f"{'shape':<30} {'native ms':>9} {'untuned':>8} {'tuned':>8} {'tuned/nat':>9} "
                    f"{'untuned/nat':>11} {'tuned/untuned':>13}  {'rule -> tuned':<20} "
                    f"{'tune ms':>7}  where"]
    for r in table["rows"]:
        lines.append(f"{r['shape']:<30} {r['native_ms']:>9.2f} {r['untuned_ms']:>8.2f} "
                     f"{r['tuned_ms']:>8.2f} {r['ratio']:>9.2f} {r['untuned_ratio']:>11.2f} "
                     f"{r['gain']:>13.2f}  {r['rule'] + ' -> ' + r['algorithm']:<20} "
                     f"{r['tune_ms']:>7.0f}  {r['where']}")
    lines.append(f"tuned / native: geometric mean {table['geomean']:.2f}, worst "
                 f"{table['worst']:.2f}; untuned / native: geometric mean "
                 f"{table['untuned_geomean']:.2f}, worst {table['untuned_worst']:.2f}; "
                 f"tuned / untuned worst {table['worst_gain']:.2f} over {len(table['rows'])}")
    return "\n".join(lines)


def format_candidates(table) -> str:
    lines = ["every algorithm / native (F.conv2d), one thorough tuning per shape "
             "(* = the tuner's choice, r = the rules')"]
    for r in table["rows"]:
        cells = "  ".join(f"{a} {x:.2f}{'*' if a == r['algorithm'] else ''}"
                          f"{'r' if a == r['rule'] else ''}" for a, x in r["ratios"].items())
        failed = "".join(f"  {a} failed" for a in r["errors"] if a != autotune.NATIVE)
        lines.append(f"{r['shape']:<30} native {r['native_ms']:>7.2f} ms  {cells}{failed}  "
                     f"({r['where']})")
    return "\n".join(lines)


@contextlib.contextmanager
def fresh_cache():
    """A temporary, empty autotune cache for the block (figures of a fresh tuning)."""
    before = os.environ.get("CNNLAB_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="cnnlab-autotune-") as tmp:
        os.environ["CNNLAB_CACHE_DIR"] = tmp
        try:
            yield tmp
        finally:
            if before is None:
                os.environ.pop("CNNLAB_CACHE_DIR", None)
            else:
                os.environ["CNNLAB_CACHE_DIR"] = before
