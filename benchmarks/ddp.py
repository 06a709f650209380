"""Data-parallel scaling: training images per second on 1 process vs P processes (DDP).

    python benchmarks/ddp.py [--nproc 2] [--models lenet resnet18] [--batch 64] [--rounds 3]
                             [--steps 5] [--device cpu|cuda] [--json]

cnnlab's data-parallel training keeps the global batch (the same mathematics as one process), so
P processes share each batch of `--batch` images: this is strong scaling. One launch of P
processes (torch's elastic launcher, gloo on CPU, NCCL on CUDA) per model; inside it the sides
alternate A B C, A B C, ... for `--rounds` rounds, each timing `--steps` training steps (SGD,
cross-entropy, after 2 warm-up steps) on one fixed synthetic batch:
    A  one process, 1 thread (rank 0 alone; the others wait at a barrier)
    B  one process, P threads (what `cnnlab train` does without --nproc on P cores)
    C  P processes, 1 thread each (`cnnlab train --nproc P`: shards, DDP, synchronised batch norm)
CUDA: A is one GPU, C is P GPUs (B is skipped); threads do not apply.
Figures: images/s of each side (median over rounds), speed-up C/A and C/B (median of the
per-round ratios) and the scaling efficiency (C/A)/P. On a machine shared with other work the
figures move with its load: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import uuid

import torch
import torch.nn.functional as F


def _steps(step, n: int, sync) -> float:
    """Seconds for n calls of step() (after 2 warm-up calls)."""
    for _ in range(2):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return time.perf_counter() - t


def worker(model_name: str, device: str, batch: int, steps: int, rounds: int) -> dict:
    """One process of the launch (torch's elastic launcher sets RANK, WORLD_SIZE, ...)."""
    import torch.distributed as dist

    from cnnlab.models import build_model
    from cnnlab.train.distributed import DistContext

    ctx = DistContext.from_env(device, timeout_s=600)
    world = ctx.world_size
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=1, num_classes=10).to(ctx.device)
    x = torch.randn(batch, 1, 32, 32, device=ctx.device)
    y = torch.randint(0, 10, (batch,), device=ctx.device)

    one = copy.deepcopy(model)  # the one-process side trains its own copy
    one_opt = torch.optim.SGD(one.parameters(), lr=0.01)

    class _Runner:  # what DistContext.attach needs of a trainer
        loss_fn = staticmethod(F.cross_entropy)

    runner = _Runner()
    runner.model = model
    ctx.attach(runner)
    opt = torch.optim.SGD(runner.model.parameters(), lr=0.01)

    def one_step():
        F.cross_entropy(one(x), y).backward()
        one_opt.step()
        one_opt.zero_grad(set_to_none=True)

    def ddp_step():
        loss, _, _ = ctx.forward_loss(runner, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    sides = {"A": [], "B": [], "C": []}
    for _ in range(rounds):
        for side in ("A", "B", "C"):
            if side == "B" and ctx.device.type == "cuda":
                continue
            dist.barrier()
            if side == "C":
                torch.set_num_threads(1)
                seconds = _steps(ddp_step, steps, sync)
            elif ctx.rank == 0:
                torch.set_num_threads(1 if side == "A" else world)
                seconds = _steps(one_step, steps, sync)
            else:
                seconds = None
            dist.barrier()
            if seconds is not None:
                sides[side].append(batch * steps / seconds)
    ctx.close()
    return sides if ctx.rank == 0 else {}


def launch(nproc: int, *args) -> dict:
    """Run `worker(*args)` in nproc processes with torch's elastic launcher -> rank 0's result."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          start_method="spawn", local_addr="127.0.0.1")
    return elastic_launch(config, worker)(*args)[0]


def summarise(sides: dict, nproc: int, batch: int) -> dict:
    def ratios(top, bottom):
        return [t / b for t, b in zip(sides[top], sides[bottom])]

    row = {side: statistics.median(v) for side, v in sides.items() if v}
    row["C/A"] = statistics.median(ratios("C", "A"))
    if sides["B"]:
        row["C/B"] = statistics.median(ratios("C", "B"))
    row["efficiency"] = row["C/A"] / nproc
    row["batch"] = batch
    return row


def main(argv=None) -> int:
    from cnnlab.runinfo import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=None,
                    help="process counts to measure (default: 2 on CPU; 2..GPUs on CUDA)")
    ap.add_argument("--models", nargs="+", default=["lenet", "resnet18"])
    ap.add_argument("--batch", type=int, default=64, help="global batch (default 64, the lab's)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side and round")
    ap.add_argument("--rounds", type=int, default=3, help="A B C rounds (default 3)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    counts = args.nproc or ([2] if args.device == "cpu" else list(range(2, gpus + 1)))
    if not counts:
        print("one GPU only: nothing to scale to", file=sys.stderr)
        return 2
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: loopback only
    results = {}
    for model in args.models:
        for nproc in counts:
            sides = launch(nproc, model, args.device, args.batch, args.steps, args.rounds)
            results[f"{model} x{nproc}"] = summarise(sides, nproc, args.batch)
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"{cpu_model()}, {os.cpu_count()} cores")
    env = {"torch": torch.__version__, "device": args.device, "hardware": where,
           "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps({"environment": env, "results": results}, indent=1))
        return 0
    print(f"torch {env['torch']}, {args.device}: {where}, load average {env['load_average']:.1f}; "
          f"global batch {args.batch}, float32, SGD step, median of {args.rounds} rounds of "
          f"{args.steps} steps")
    if args.device == "cpu":
        print("GPU scaling (1..N GPUs, NCCL): not measured here (python benchmarks/ddp.py "
              "--device cuda on a GPU machine)")
    print(f"\n{'model x P':16} {'1 proc 1 thr':>13} {'1 proc P thr':>13} {'P procs':>10} "
          f"{'P/1thr':>8} {'P/Pthr':>8} {'efficiency':>10}   (images/s)")
    for name, row in results.items():
        print(f"{name:16} {row['A']:13.0f} {row.get('B', float('nan')):13.0f} {row['C']:10.0f} "
              f"{row['C/A']:8.2f} {row.get('C/B', float('nan')):8.2f} {row['efficiency']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
