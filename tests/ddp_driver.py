"""Many data-parallel checks in ONE torchrun launch (tests/test_ddp.py starts it; importing torch
in every process is what costs): `torchrun ... tests/ddp_driver.py PLAN.json OUT_DIR`.

Each process joins the group once, then
1. checks the synchronised batch norm against one-process nn.BatchNorm2d on the whole batch
   (every process holds the whole batch, so each computes the reference itself);
2. runs `cnnlab train` (`cnnlab.cli.main`) for each (label, argv) of the plan, recording its exit
   status, what it printed on stderr, and every file it wrote or locked;
and writes OUT_DIR/rank<R>.json with all of it (tests/test_ddp.py compares).
"""

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed
from torch import nn

import cnnlab.atomic
import cnnlab.train.checkpoint
from cnnlab.cli import main as cnnlab_main
from cnnlab.train.distributed import DistContext, shard_bounds
from cnnlab.train.sync_batchnorm import SyncBatchNorm2d

WRITES: list[str] = []


def record_writes() -> None:
    """Every atomic write (checkpoints, JSON, figures) and every run-directory lock is noted."""
    write = cnnlab.atomic.atomic_write
    enter = cnnlab.atomic.DirectoryLock.__enter__

    def atomic_write(path, chunks):
        WRITES.append(str(path))
        return write(path, chunks)

    def lock(self):
        WRITES.append(str(self.path))
        return enter(self)

    cnnlab.atomic.atomic_write = atomic_write
    cnnlab.train.checkpoint.atomic_write = atomic_write
    cnnlab.atomic.DirectoryLock.__enter__ = lock


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def syncbn_case(ctx, n: int, dtype, momentum) -> dict:
    """Two training steps of BatchNorm on n samples: this process's shard through SyncBatchNorm2d
    vs the whole batch through nn.BatchNorm2d -> the largest relative differences."""
    g = torch.Generator().manual_seed(n)
    xs = [torch.randn(n, 3, 4, 5, generator=g, dtype=dtype) * 2 + 0.5 for _ in range(2)]
    dys = [torch.randn(n, 3, 4, 5, generator=g, dtype=dtype) for _ in range(2)]
    ref = nn.BatchNorm2d(3, momentum=momentum).to(dtype)
    mine = SyncBatchNorm2d(3, momentum=momentum).to(dtype)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.normal_(generator=g)
    mine.load_state_dict(ref.state_dict())
    lo, hi = shard_bounds(n, ctx.rank, ctx.world_size)
    diffs = {"y": 0.0, "dx": 0.0}
    for x, dy in zip(xs, dys):
        x_ref, x_mine = x.clone().requires_grad_(), x[lo:hi].clone().requires_grad_()
        y_ref, y_mine = ref(x_ref), mine(x_mine)
        (y_ref * dy).sum().backward()
        (y_mine * dy[lo:hi]).sum().backward()
        diffs["y"] = max(diffs["y"], max_rel(y_mine, y_ref[lo:hi]))
        diffs["dx"] = max(diffs["dx"], max_rel(x_mine.grad, x_ref.grad[lo:hi]))
    # parameter gradients are per process (DDP averages them): their sum is the whole batch's
    for name in ("weight", "bias"):
        total = getattr(mine, name).grad.clone()
        torch.distributed.all_reduce(total)
        diffs[f"d{name}"] = max_rel(total, getattr(ref, name).grad)
    diffs["running_mean"] = max_rel(mine.running_mean, ref.running_mean)
    diffs["running_var"] = max_rel(mine.running_var, ref.running_var)
    diffs["batches_tracked"] = int(mine.num_batches_tracked) - int(ref.num_batches_tracked)
    diffs["shard"] = [lo, hi]
    return diffs


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    ctx = DistContext.from_env("cpu", timeout_s=60)
    record_writes()
    result = {"rank": ctx.rank, "world_size": ctx.world_size, "syncbn": {}, "runs": []}
    for label, n, dtype, momentum in (("equal", 8, torch.float64, 0.3),
                                      ("unequal", 9, torch.float64, 0.3),
                                      ("unequal-cumulative", 7, torch.float64, None),
                                      ("unequal-float32", 9, torch.float32, 0.1)):
        result["syncbn"][label] = syncbn_case(ctx, n, dtype, momentum)
    for label, argv in plan:
        start = len(WRITES)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = cnnlab_main(argv)
            except SystemExit as exc:
                code = exc.code
        result["runs"].append({"label": label, "code": code, "stderr": err.getvalue(),
                               "writes": WRITES[start:]})
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(result, indent=1))
    ctx.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
