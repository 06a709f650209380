"""`cnnlab tune MODEL`: time every algorithm of a model's fast convolutions (and pooling) now.

Runs one training step (forward + backward) and one evaluation forward of MODEL, built on
cnnlab's fast operators, on random data at --batch, with the autotuner re-timing every layer
shape (cnnlab.ops.autotune.retuning) and torch's own kernel timed in the same interleaved
rounds. The choices go to the autotune cache, so later trainings on this machine never time.
"""

from __future__ import annotations

import json

from cnnlab.cli.summary import MODELS_HELP, console
from cnnlab.errors import UserError


def register(sub):
    p = sub.add_parser(
        "tune",
        help="time every algorithm of a model's fast conv/pool layers and cache the fastest",
        description=(
            "Pre-tune MODEL (built with conv_impl=fast, as `cnnlab train --conv-impl fast` runs "
            "it) for a training step and an evaluation at --batch: every applicable algorithm "
            "of each conv (and average-pool) shape is timed, interleaved with torch's kernel, "
            "and the fastest is saved to the autotune cache (see CNNLAB_AUTOTUNE, "
            "CNNLAB_CACHE_DIR). Prints per shape: layers, chosen algorithm and its time, every "
            "candidate's time, and the ratio to torch's kernel measured in the same run."
        ),
    )
    p.add_argument("model", metavar="MODEL", help=MODELS_HELP)
    p.add_argument("--batch", type=int, default=64, metavar="N", help="batch size (default 64)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def tune_model(name: str, batch: int = 64, device="auto", status=None) -> dict:
    """Tune model `name` at `batch` on `device`; returns what `cnnlab tune --json` prints.

    status(text): called with each layer's name as it runs (progress)."""
    import torch
    import torch.nn.functional as F

    from cnnlab import nn as cnn
    from cnnlab.analysis import speed
    from cnnlab.models import build_model, default_in_channels
    from cnnlab.ops import autotune
    from cnnlab.train.runner import resolve_device

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"--batch must be a positive integer, got {batch!r}")
    dev = resolve_device(device)
    try:
        model = build_model(name, conv_impl="fast")
    except UserError:                   # no conv_impl (lenet-native), or no such model at all
        model = build_model(name)
    model.to(dev)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (cnn.Conv2D, cnn.Pool2D))]
    if not any(m.impl == "fast" for _, m in layers):
        raise UserError(f"model {name!r} runs on torch's layers only: nothing to tune "
                        "(lenet is the same model on cnnlab's operators)")
    seen: dict[str, dict] = {}
    phase = {"name": "train"}

    def hook(module, args, layer):
        (x,) = args
        if isinstance(module, cnn.Conv2D):
            key = autotune.conv_key(x, module.weight, module.bias, module.stride, module.padding)
        else:
            key = autotune.pool_key(x, module.kernel_size, module.stride, module.padding,
                                    module.mode)
        row = seen.setdefault(key, {"key": key, "pass": phase["name"], "layers": []})
        if layer not in row["layers"]:
            row["layers"].append(layer)
        if status:
            status(f"tuning {phase['name']} {layer}")

    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: hook(mod, a, n))
               for n, m in layers]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, default_in_channels(name), 32, 32, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    before = autotune.stats()["tune_s"]
    try:
        # More rounds than a training's first call spends: people read this table.
        rounds = autotune.Rounds(min_rounds=3, max_rounds=7, budget_s=1.5)
        with autotune.using("on"), autotune.retuning(rounds):
            model.train()
            F.cross_entropy(model(x), y).backward()
            phase["name"] = "eval"
            model.eval()
            with torch.no_grad():
                model(x)
    finally:
        for h in handles:
            h.remove()
    measured = autotune.measurements()
    rows = [{**row, **_figures(measured[row["key"]])} for row in seen.values()
            if row["key"] in measured]
    env = speed.environment(str(dev))
    return {"model": name, "batch": batch, "device": str(dev), "device_name": env["device_name"],
            "threads": env["threads"], "load_average": env["load_average"],
            "cache": str(autotune.cache_path()), "tune_s": autotune.stats()["tune_s"] - before,
            "rows": rows}


def _figures(entry) -> dict:
    native, ms = entry.get("native_ms"), entry["ms"]
    chosen = ms.get(entry["algorithm"])
    return {"algorithm": entry["algorithm"], "rule": entry["rule"], "ms": chosen,
            "candidates_ms": ms, "native_ms": native, "errors": entry["errors"],
            "ratio": chosen / native if chosen and native else None}


def _print(data):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{data['model']} at batch {data['batch']} on {data['device']} "
                        f"({data['device_name']}, {data['threads']} threads, load average "
                        f"{data['load_average']:.1f})")
    for col, justify in [("layers", "left"), ("pass", "left"), ("shape", "left"),
                         ("algorithm", "left"), ("ms", "right"), ("every candidate, ms", "left"),
                         ("native ms", "right"), ("/ native", "right")]:
        table.add_column(col, justify=justify)
    for r in data["rows"]:
        shape = r["key"].split(" ", 3)[3]            # drop "conv2d float32 nchw"
        cands = "  ".join(f"{a} {t:.2f}" for a, t in sorted(r["candidates_ms"].items(),
                                                            key=lambda kv: kv[1]))
        cands += "".join(f"  {a} failed" for a in r["errors"])
        algo = r["algorithm"] + ("" if r["algorithm"] == r["rule"] else f" (rule: {r['rule']})")
        table.add_row(escape(", ".join(r["layers"])), r["pass"], escape(shape), algo,
                      f"{r['ms']:.2f}", escape(cands), f"{r['native_ms']:.2f}",
                      f"{r['ratio']:.2f}")
    out = console()
    out.print(table)
    out.print(f"tuned {len(data['rows'])} shapes in {data['tune_s']:.1f} s; cache: "
              f"{escape(data['cache'])}", style="dim")


def run(args) -> int:
    if args.json:
        print(json.dumps(tune_model(args.model, args.batch, args.device), indent=1))
        return 0
    with console().status("tuning") as spinner:
        data = tune_model(args.model, args.batch, args.device, spinner.update)
    _print(data)
    return 0
