"""Data-parallel training on torch.distributed: one process per CPU share (gloo) or per GPU
(NCCL), started by torchrun (or `cnnlab train --nproc N`, which runs torchrun's launcher).

The same mathematics as one process with the same global batch:
- every process draws the same global batches (the same permutation from the same seeded
  generator) and trains on its contiguous shard of each (`shard_bounds`: split as evenly as it
  can be; no sample dropped or repeated);
- DistributedDataParallel averages the processes' gradients with equal weights, so process r
  scales its mean loss by n_r * W / B (its n_r of the B samples, W processes): the average is
  then the gradient of the global batch's mean loss, also when a short last batch splits
  unevenly;
- batch norm statistics span the global batch (`sync_batchnorm` on CPU, torch's on CUDA);
- evaluation takes whole batches round-robin (`BatchShards`: each sample once, no padding; a
  DistributedSampler pads with repeated samples) and sums (loss sum, correct, count) over the
  processes.

The fast operators (cnnlab's conv/pool layers) run the rules' algorithms on every process, or
the ones a resumed run recorded (`cnnlab.train.algorithms`): the autotuner would time on each
process, under each one's load, and could choose differently.

Only rank 0 writes files and prints; every process computes everything else, so the collectives
line up. A signal on any process stops all of them after the same step (`AgreedStop`).
Every collective is bounded by the process group's timeout (`--dist-timeout`, config.DIST_TIMEOUT_S).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from cnnlab.errors import UserError
from cnnlab.train.config import DIST_TIMEOUT_S

_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Words of the errors gloo and NCCL raise when another process of the group died or hung.
_BROKEN_GROUP_WORDS = ("connection closed", "connection reset", "connection refused",
                       "timed out", "broken pipe", "nccl error", "communicator was aborted")


def launched() -> bool:
    """Whether this process was started by torchrun (its environment names rank and world)."""
    return all(key in os.environ for key in _LAUNCH_ENV)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[lo, hi) of process `rank`'s contiguous part of n samples split as evenly as they can be:
    the first n % W processes take one more (10 over 4: 3, 3, 2, 2)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def is_broken_group(err: BaseException) -> bool:
    """Whether `err` says the process group broke (a peer died, hung past the timeout, or its
    connection dropped), rather than a bug in this process."""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(word in text for word in _BROKEN_GROUP_WORDS)


@dataclass
class DistContext:
    """This process's place in a data-parallel run, and the collectives the trainer needs."""

    rank: int
    world_size: int
    local_rank: int
    backend: str                 # "gloo" (CPU) or "nccl" (CUDA)
    device: torch.device         # where this process trains: cpu, or cuda:LOCAL_RANK
    launch_id: str = ""          # torchrun's run id: the same for every restart of one job
    restart: int = 0             # TORCHELASTIC_RESTART_COUNT: 0 first, then 1, 2, ...
    owns_group: bool = False     # this context started the process group (and closes it)
    ddp: object = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device="auto", timeout_s: float = DIST_TIMEOUT_S) -> "DistContext":
        """Join the process group torchrun set up (or the one already started in this process).

        device: "auto" (cuda when available), "cpu" or "cuda"; a process takes GPU LOCAL_RANK."""
        if not launched():
            raise UserError("not started by torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR "
                            "and MASTER_PORT must be set")
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
        where = check_device(device, local)
        backend = "nccl" if where.type == "cuda" else "gloo"
        owns = not dist.is_initialized()
        if owns:
            if where.type == "cuda":
                torch.cuda.set_device(where)
            store, _, _ = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
            # After a torchrun restart the agent's store still holds the keys of the dead
            # attempt (rank 0's old address): a prefix per attempt keeps them apart.
            store = dist.PrefixStore(f"cnnlab/attempt{restart}", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                    timeout=timedelta(seconds=timeout_s),
                                    device_id=where if where.type == "cuda" else None)
        elif dist.get_backend() != backend:
            raise UserError(f"the process group runs {dist.get_backend()}, device {where} needs "
                            f"{backend}")
        if where.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)  # W processes share the cores: one thread each by default
        return cls(rank, world, local, backend, where,
                   launch_id=os.environ.get("TORCHELASTIC_RUN_ID", ""),
                   restart=restart, owns_group=owns)

    def close(self, together: bool = True) -> None:
        """Leave the process group (when this context started it); together: all processes
        at once (a barrier first), else alone (after an error this process alone may have hit:
        waiting for the others could hang; they see the connection drop)."""
        # DistributedDataParallel sits in reference cycles; its reducer, freed by the garbage
        # collector only at interpreter exit, after the group is gone, aborted the process
        # ("terminate called without an active exception") in about 1 run in 4.
        self.ddp = None
        gc.collect()
        if self.owns_group and dist.is_initialized():
            if together:
                dist.barrier()  # no process drops its connections while another still uses them
            dist.destroy_process_group()

    def describe(self) -> dict:
        """What checkpoints and run.json record about the run's processes."""
        return {"world_size": self.world_size, "backend": self.backend, "launch_id": self.launch_id}

    # -------------------------------------------------------------- collectives
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every process."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_state(self, module: torch.nn.Module) -> None:
        """Rank 0's weights and buffers into `module` on every process (in place)."""
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def agree(self, check):
        """Run `check()` on every process -> its result; a UserError on ANY process is raised on
        every process (rank 0's message first), so no process waits for one that gave up."""
        try:
            result, error = check(), None
        except UserError as err:
            result, error = None, str(err)
        errors = [None] * self.world_size
        dist.all_gather_object(errors, error)
        failed = [(rank, text) for rank, text in enumerate(errors) if text]
        if failed:
            rank, text = failed[0]
            raise UserError(text if rank == 0 else f"rank {rank}: {text}")
        return result

    def check_same(self, what: str, value) -> None:
        """UserError on every process unless all hold the same `value` (e.g. the run's settings)."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        for rank, other in enumerate(values):
            if other != values[0]:
                raise UserError(f"rank {rank} has other {what} than rank 0 ({other!r} vs "
                                f"{values[0]!r}): start every process with the same arguments "
                                "and files")

    @contextlib.contextmanager
    def run_directory(self, out, resuming: bool = False, overwrite: bool = False):
        """`cnnlab.train.rundir.run_directory` for a data-parallel run: rank 0 alone checks and
        locks `out` (the processes do not refuse each other); its refusal is a UserError on
        every process."""
        from cnnlab.train.rundir import run_directory

        with contextlib.ExitStack() as stack:
            def enter():
                if self.is_main:
                    return stack.enter_context(run_directory(out, resuming, overwrite))
                return Path(out)
            yield self.agree(enter)

    # ------------------------------------------------------------ the trainer
    def check_batches(self, n: int, batch_size: int) -> None:
        """UserError unless every training batch of n images gives each process one at least
        (an empty shard is mathematically fine, but the lab's own operators refuse empty
        batches)."""
        sizes = {min(batch_size, n), n % batch_size or batch_size}
        if min(sizes) < self.world_size:
            raise UserError(f"{self.world_size} processes need batches of {self.world_size} "
                            f"images at least; {n} training images in batches of {batch_size} "
                            f"give one of {min(sizes)}: change --batch-size or the number of "
                            "processes")

    def attach(self, runner) -> None:
        """Make `runner` train data-parallel: batch norm over the global batch, its model wrapped
        in DistributedDataParallel (for training; checkpoints keep the plain model's keys), and
        its hooks pointed here (`Runner._train_step`, `Runner.evaluate`)."""
        from torch.nn.parallel import DistributedDataParallel

        from cnnlab.train.sync_batchnorm import convert_sync_batchnorm

        if self.backend == "nccl":
            runner.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(runner.model)
        else:  # torch's SyncBatchNorm refuses CPU tensors
            runner.model = convert_sync_batchnorm(runner.model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(runner.model, device_ids=ids)
        runner.dist = self

    def forward_loss(self, runner, x, y):
        """One training forward of this process's shard of the global batch (x, y) ->
        (loss to backpropagate, the global batch's mean loss (detached, the same on every
        process), B the global batch size)."""
        n = y.shape[0]
        lo, hi = shard_bounds(n, self.rank, self.world_size)
        out = self.ddp(x[lo:hi])
        if hi > lo:
            loss = runner.loss_fn(out, y[lo:hi]) * ((hi - lo) * self.world_size / n)
        else:  # no sample here this step: a zero loss that still joins DDP's gradient averaging
            loss = out.sum() * 0.0
        shown = loss.detach().clone()
        dist.all_reduce(shown)  # sum over processes of n_r * W / B * mean_r = W * global mean
        return loss, shown / self.world_size, n

    def reduce_evaluation(self, metric, total_loss: torch.Tensor, n: int):
        """Sum (loss sum, correct, count) over the processes -> (total loss, count); the metric
        (an `Accuracy`) then holds the counts of every sample."""
        t = torch.stack([total_loss.double().reshape(()).to(self._comm_device()),
                         torch.as_tensor(metric.num_correct, dtype=torch.float64,
                                         device=self._comm_device()).reshape(()),
                         torch.tensor(float(n), dtype=torch.float64, device=self._comm_device())])
        dist.all_reduce(t)
        metric.num_correct, metric.num_count = t[1], int(t[2])
        return t[0], int(t[2])

    def eval_shards(self, loader) -> "BatchShards":
        return BatchShards(loader, self.rank, self.world_size)

    def agreed_stop(self, stop) -> "AgreedStop":
        return AgreedStop(stop, self)


class BatchShards:
    """The batches i of `loader` with i % world_size == rank: over all processes every batch,
    hence every sample, exactly once (no padding; a process may get none)."""

    def __init__(self, loader, rank: int, world_size: int):
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, len(self.loader), self.world_size))

    def __iter__(self):
        # Iterate the whole loader on every process: its random draws stay those of one process.
        for i, batch in enumerate(self.loader):
            if i % self.world_size == self.rank:
                yield batch

    @property
    def generator(self):
        return getattr(self.loader, "generator", None)


class AgreedStop:
    """A `StopOnSignal` that every process reads alike: `.requested` is one all-reduce (MAX) of
    the signal numbers, so once any process got SIGINT/SIGTERM all stop after the same step."""

    def __init__(self, local, ctx: DistContext):
        self.local, self.ctx = local, ctx
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        t = torch.tensor([self.local.signum or 0], dtype=torch.int64,
                         device=self.ctx._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        self.signum = int(t) or None
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0


def restart_target(out, ctx: DistContext) -> Path | None:
    """After torchrun restarted the job (`--max-restarts`): `out/last.pt` when an earlier attempt
    of this same job (same launch id) wrote it, so the restart resumes it; else None."""
    from cnnlab.train.checkpoint import load_checkpoint

    last = Path(out) / "last.pt"
    if ctx.restart < 1 or not last.is_file():
        return None
    launch = (load_checkpoint(last).get("distributed") or {}).get("launch_id")
    return last if launch and launch == ctx.launch_id else None


def check_device(device, local_rank: int) -> torch.device:
    """The device of the process with this LOCAL_RANK for --device `device` (auto, cpu, cuda);
    UserError when there is no such GPU."""
    text = "auto" if device in (None, "auto") else str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text != "cuda":
        raise UserError(f"--device {device}: in data-parallel training each process takes the "
                        "GPU of its local rank; give --device cuda (or cpu, or auto)")
    if not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available (use --device cpu)")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: this machine has "
                        f"{torch.cuda.device_count()}; start at most that many processes per node "
                        "(or train on the CPU: --device cpu)")
    return torch.device("cuda", local_rank)
