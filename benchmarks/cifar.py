"""CIFAR-10 training throughput: `Runner.train` vs a bare PyTorch loop, the fast recipe's work.

    python benchmarks/cifar.py [--quick] [--devices cpu cuda] [--models ...] [--batch 64]
                               [--steps 4] [--pairs 3] [--threads N] [--json]

For every combination of model (resnet18-vision, resnet18-cifar), device (cpu, cuda), precision
(fp32, bf16 autocast), channels-last (off, on) and operators (native: torch's convolutions,
fast: cnnlab's), both sides train the same model (two copies of one initialisation) on the same
uint8 batches (synthetic, CIFAR's size, already on the device) with the fast recipe's work per
step: the batch transform (random crop + flip, normalisation, on the device), autocast, label
smoothing, SGD with Nesterov momentum, a one-cycle lr stepped every batch. One "epoch" is
`--steps` batches; epochs alternate runner / bare (which goes first alternates too), after one
warm-up epoch each; the figure is the median over `--pairs` pairs of time(runner) / time(bare)
(target <= 1.05), and each side's median images per second. On CUDA every epoch ends with a
synchronisation before the clock is read. CUDA rows are skipped with a message without a GPU.
On a shared machine use `--clock cpu` (CPU rows timed by this process's CPU time, 1 thread).
"""

from __future__ import annotations

import argparse
import copy
import io
import itertools
import json
import os
import statistics
import sys
import time
from contextlib import redirect_stdout

import torch
import torch.nn.functional as F

from cnnlab.data import ImageSet, TensorLoader
from cnnlab.models import build_model
from cnnlab.runinfo import cpu_model
from cnnlab.train.amp import Precision
from cnnlab.train.batches import BatchTransform
from cnnlab.train.config import TrainConfig
from cnnlab.train.metric import Accuracy
from cnnlab.train.recipes import configure_runner, make_scheduler, normalization
from cnnlab.train.runner import Runner

MODELS = ("resnet18-vision", "resnet18-cifar")
TARGET = 1.05


def fast_config(model, device, amp, channels_last, ops, batch, steps) -> TrainConfig:
    kwargs = {"conv_impl": ops} if ops != "native" else {}
    return TrainConfig(model=model, data="cifar10:synthetic", recipe="fast", device=device,
                       amp=amp, channels_last=channels_last, batch_size=batch, epochs=1,
                       model_kwargs=kwargs, quiet=True).resolved()


def synthetic_set(n, device, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageSet(images.to(device), labels.to(device), images, torch.arange(n).numpy())


def bare_epoch(model, optimizer, scheduler, transform, precision, loader, smoothing):
    """The loop a PyTorch user writes for the same work."""
    model.train()
    for x, y in loader:
        x = transform(x, train=True)
        with precision.autocast():
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return loss.item()


def measure(cfg, steps, pairs, sync, clock=time.perf_counter) -> dict:
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    base = build_model(cfg.model, **cfg.model_kwargs)
    data = synthetic_set(steps * cfg.batch_size, device)

    run_model = copy.deepcopy(base)
    optimizer = torch.optim.SGD(run_model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    runner = Runner(run_model, optimizer, F.cross_entropy, Accuracy(), device=device,
                    progress=False, log=False)
    configure_runner(runner, cfg, data.images, steps)
    run_loader = TensorLoader(data, cfg.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(1))

    bare_model = copy.deepcopy(base).to(device)
    if cfg.channels_last:
        bare_model.to(memory_format=torch.channels_last)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    bare_sched, _ = make_scheduler(cfg, bare_opt, steps)
    transform = BatchTransform(*normalization(cfg.normalize), cfg.augment, cfg.seed,
                               cfg.channels_last, device)
    precision = Precision(cfg.amp, device)
    bare_loader = TensorLoader(data, cfg.batch_size, shuffle=True,
                               generator=torch.Generator().manual_seed(1))

    def runner_epoch():
        with redirect_stdout(io.StringIO()):
            runner.train(run_loader, None, num_epochs=runner.epoch + 1, log_steps=0,
                         eval_steps=0, save_path=None)

    def timed(fn):
        sync()
        start = clock()
        fn()
        sync()
        return clock() - start

    def bare():
        bare_epoch(bare_model, bare_opt, bare_sched, transform, precision, bare_loader,
                   cfg.label_smoothing)

    timed(runner_epoch), timed(bare)  # warm-up: allocations, cuDNN autotuning
    ratios, runner_s, bare_s = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            r, b = timed(runner_epoch), timed(bare)
        else:
            b, r = timed(bare), timed(runner_epoch)
        ratios.append(r / b)
        runner_s.append(r)
        bare_s.append(b)
    images = steps * cfg.batch_size
    return {"model": cfg.model, "device": str(device), "amp": cfg.amp,
            "channels_last": cfg.channels_last, "ops": cfg.model_kwargs.get("conv_impl", "native"),
            "batch": cfg.batch_size, "steps": steps, "pairs": pairs,
            "runner_img_s": images / statistics.median(runner_s),
            "bare_img_s": images / statistics.median(bare_s),
            "median_ratio": statistics.median(ratios), "ratios": [round(x, 4) for x in ratios]}


def environment() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0], "torch": torch.__version__, "gpu": gpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu", "cuda"])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--amp", nargs="+", choices=("off", "bf16"), default=["off", "bf16"])
    ap.add_argument("--channels-last", nargs="+", choices=("off", "on"), default=["off", "on"])
    ap.add_argument("--ops", nargs="+", choices=("native", "fast"), default=["native", "fast"])
    ap.add_argument("--batch", type=int, default=None,
                    help="images per step (default: 512 on cuda, 32 on cpu; --quick 8 on cpu)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch "
                    "(default 20 on cuda, 3 on cpu; --quick 2)")
    ap.add_argument("--pairs", type=int, default=None, help="interleaved epoch pairs (default 5; "
                    "--quick 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time (default); cpu: this process's CPU time with torch "
                         "on 1 thread, which other processes' load cannot inflate (CPU rows "
                         "only: a shared machine)")
    ap.add_argument("--quick", action="store_true", help="small batches, few steps: a smoke run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    rows, skipped = [], []
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            skipped.append("cuda rows skipped: no CUDA GPU on this machine")
            continue
        gpu = device == "cuda"
        batch = args.batch or (512 if gpu else (8 if args.quick else 32))
        steps = args.steps or (2 if args.quick else (20 if gpu else 3))
        pairs = args.pairs or (3 if args.quick else 5)
        sync = torch.cuda.synchronize if gpu else (lambda: None)
        clock = time.process_time if args.clock == "cpu" and not gpu else time.perf_counter
        for model, amp, cl, ops in itertools.product(args.models, args.amp, args.channels_last,
                                                    args.ops):
            cfg = fast_config(model, device, amp, cl == "on", ops, batch, steps)
            row = measure(cfg, steps, pairs, sync, clock)
            row["clock"] = "cpu" if clock is time.process_time else "wall"
            rows.append(row)
            if not args.json:
                print(_row_text(row), flush=True)
    result = {"environment": env, "rows": rows, "skipped": skipped, "target": TARGET}
    worst = max((r["median_ratio"] for r in rows), default=None)
    result["passed"] = worst is not None and worst <= TARGET
    result["median_over_rows"] = statistics.median(r["median_ratio"] for r in rows) if rows else None
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for line in skipped:
            print(line)
        print(f"\n{env['cpu']} ({env['cores']} cores, torch {env['torch_threads']} threads), GPU "
              f"{env['gpu'] or 'none'}, torch {env['torch']}, load average "
              f"{env['load_average']:.1f}; median ratio runner/bare over the rows "
              f"{_text(result['median_over_rows'])}, worst {_text(worst)} (target <= {TARGET} "
              f"for each): {'PASS' if result['passed'] else 'FAIL'}")
    return 0 if result["passed"] else 1


def _text(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.3f}"


def _row_text(row) -> str:
    return (f"{row['model']:16s} {row['device']:5s} {row['amp']:4s} "
            f"channels-last {'on ' if row['channels_last'] else 'off'} ops {row['ops']:6s} "
            f"batch {row['batch']:4d}: runner {row['runner_img_s']:9,.1f} img/s, bare "
            f"{row['bare_img_s']:9,.1f} img/s, ratio {row['median_ratio']:.3f} "
            f"(pairs {row['ratios']})")


if __name__ == "__main__":
    sys.exit(main())
