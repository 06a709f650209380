"""Runner overhead: one training epoch through `Runner.train` vs a bare hand-written PyTorch loop.

    python benchmarks/runner.py [--model lenet-native] [--pairs 9] [--threads N] [--clock wall|cpu]

On a machine shared with other work, wall times swing by 2-5x between neighbouring epochs; with
`--threads 1 --clock cpu` each epoch is timed by this process's CPU time instead, which other
processes barely disturb.

Same process, same model (two copies of one initialisation), same cached data and batches
(`TensorLoader`, batch 64, the bundled lab split: 16 steps an epoch). Epochs alternate A/B/A/B
(which goes first alternates too); the figure is the median of the per-pair ratios
runner / bare, target <= 1.05. The Runner runs as in training (every step loss recorded, the lab's
logging schedule with output discarded) without dev evaluations or checkpoints: those are work
the bare loop would have to do too, not overhead.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import time
from contextlib import redirect_stdout

import torch
import torch.nn.functional as F

from cnnlab.data import TensorLoader, load_mnist
from cnnlab.models import build_model
from cnnlab.train.metric import Accuracy
from cnnlab.train.runner import Runner


def bare_epoch(model, optimizer, loader):
    """The loop every PyTorch tutorial writes."""
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lenet-native", help="model name (default lenet-native)")
    ap.add_argument("--pairs", type=int, default=9, help="interleaved epoch pairs (default 9)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (use with --threads 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_mnist()
    torch.manual_seed(0)
    base = build_model(args.model)
    bare_model = copy.deepcopy(base)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=args.lr)
    run_model = copy.deepcopy(base)
    runner = Runner(run_model, torch.optim.SGD(run_model.parameters(), lr=args.lr),
                    F.cross_entropy, Accuracy(), device="cpu", progress=False, log=True)
    bare_loader = TensorLoader(data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(1))
    run_loader = TensorLoader(data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(1))

    def runner_epoch():
        with redirect_stdout(io.StringIO()):     # the lab's log lines, formatted but not shown
            runner.train(run_loader, None, num_epochs=runner.epoch + 1, log_steps=15,
                         eval_steps=0, save_path=None)

    clock = time.perf_counter if args.clock == "wall" else time.process_time

    def timed(fn):
        t = clock()
        fn()
        return clock() - t

    timed(runner_epoch), timed(lambda: bare_epoch(bare_model, bare_opt, bare_loader))   # warm-up
    ratios, runner_s, bare_s = [], [], []
    for i in range(args.pairs):
        if i % 2 == 0:
            r = timed(runner_epoch)
            b = timed(lambda: bare_epoch(bare_model, bare_opt, bare_loader))
        else:
            b = timed(lambda: bare_epoch(bare_model, bare_opt, bare_loader))
            r = timed(runner_epoch)
        ratios.append(r / b)
        runner_s.append(r)
        bare_s.append(b)
    result = {
        "model": args.model, "pairs": args.pairs, "steps_per_epoch": len(run_loader),
        "torch_threads": torch.get_num_threads(), "clock": args.clock,
        "median_ratio": statistics.median(ratios),
        "ratios": [round(x, 4) for x in ratios],
        "runner_epoch_s_median": statistics.median(runner_s),
        "bare_epoch_s_median": statistics.median(bare_s),
        "target": 1.05,
    }
    result["passed"] = result["median_ratio"] <= result["target"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: Runner epoch {result['runner_epoch_s_median'] * 1000:.1f} ms, bare loop "
              f"{result['bare_epoch_s_median'] * 1000:.1f} ms (medians of {args.pairs}; "
              f"{len(run_loader)} steps, {torch.get_num_threads()} threads, {args.clock} clock)")
        print(f"median ratio runner/bare = {result['median_ratio']:.3f} (target <= 1.05): "
              f"{'PASS' if result['passed'] else 'FAIL'}; ratios {result['ratios']}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
