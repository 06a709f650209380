"""`train_run(config)`: one whole training run into a run directory, as `cnnlab train` does it.

The run directory (`config.out`, default runs/<model>) receives:
    best.pt       the weights with the best dev score (cnnlab checkpoint, loadable by `evaluate`)
    history.json  train step losses, dev losses and scores with their steps, epoch losses
    curves.png    the lab's two panels (loss; dev accuracy)
    last.pt       the resumable checkpoint (weights, optimizer, random states, data position,
                  the fast operators' algorithms)
    run.json      config, library versions, hardware, wall time and phase times, peak RSS,
                  best dev score, the test accuracy/loss of best.pt, and the algorithm each
                  fast conv/pool layer ran (`cnnlab.train.algorithms`)
Each file carries the run's id; the directory is locked while the run writes to it and a fresh
run never mixes with another run's files (`cnnlab.train.rundir`).

The order of random draws follows the lab: seed everything, build the model, then shuffle the
training set with a generator seeded with the same seed. A CIFAR-10 run (`data="cifar10:PATH"`)
follows its recipe (cnnlab.train.recipes): uint8 batches normalised and augmented on the device
by the Runner's batch transform (its own generator, also seeded from the seed), its optimizer,
schedule, precision and evaluation. On a GPU its images are moved there once.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data import TensorLoader, load_data, subset, to_device
from cnnlab.errors import UserError
from cnnlab.runinfo import write_run_json
from cnnlab.train.algorithms import RunAlgorithms
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.config import TrainConfig
from cnnlab.train.guard import safe_train
from cnnlab.train.init import lab_init_
from cnnlab.train.loading import load_state_strict
from cnnlab.train.metric import Accuracy
from cnnlab.train.plots import plot_training_loss_acc
from cnnlab.train.recipes import configure_runner
from cnnlab.train.rng import seed_everything, seed_worker
from cnnlab.train.rundir import run_directory
from cnnlab.train.runner import Runner, new_run_id


def make_optimizer(name, params, lr, weight_decay=0.0, momentum=0.0, nesterov=False):
    """"sgd" (plain SGD, as the lab's paddle.optimizer.SGD; with momentum and Nesterov for the
    fast recipe) or "adam" (L2 weight decay, as Paddle's)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum or 0.0,
                               nesterov=bool(nesterov))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}: expected sgd or adam")


def make_loader(dataset, batch_size, shuffle=False, generator=None, kind="tensor", num_workers=0):
    """A TensorLoader ("tensor") or a torch DataLoader ("torch"); both give the same batches."""
    if kind == "tensor":
        return TensorLoader(dataset, batch_size, shuffle=shuffle, generator=generator)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=generator, num_workers=num_workers,
                                       worker_init_fn=seed_worker if num_workers else None)


def build_run(cfg: TrainConfig, data=None, run_id: str | None = None, dist=None):
    """-> (runner, data, train_loader, dev_loader, test_loader) for a resolved config; with
    `dist` (a `cnnlab.train.distributed.DistContext`) the runner trains data-parallel and the
    dev/test loaders give this process its share of the batches."""
    from cnnlab.models import build_model, full_kwargs

    data = data if data is not None else prepare_data(cfg)
    if cfg.threads:
        # Results depend on it at float rounding level (reduction order), so it is in the config.
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    in_channels = data.train.images.shape[1]
    kwargs = full_kwargs(cfg.model, in_channels=in_channels, num_classes=10, **cfg.model_kwargs)
    model = build_model(cfg.model, **kwargs)
    if cfg.weight_init == "lab":
        lab_init_(model, cfg.model)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay,
                               cfg.momentum, cfg.nesterov)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = make_loader(data.train, cfg.batch_size, shuffle=True, generator=generator,
                               kind=cfg.loader, num_workers=cfg.num_workers)
    dev_loader = make_loader(data.dev, cfg.batch_size, kind=cfg.loader, num_workers=cfg.num_workers)
    test_loader = make_loader(data.test, cfg.batch_size, kind=cfg.loader, num_workers=cfg.num_workers)
    # Every builder argument is recorded: a later change of a builder default cannot change
    # what a checkpoint rebuilds.
    spec = {"name": cfg.model, "kwargs": kwargs}
    runner = Runner(model, optimizer, F.cross_entropy, Accuracy(is_logits=True),
                    device=cfg.device if dist is None else dist.device,
                    progress=not cfg.quiet, log=not cfg.quiet, model_spec=spec, config=cfg.to_dict(),
                    run_id=run_id)
    configure_runner(runner, cfg, data.train.images, len(train_loader))
    if dist is not None:  # after configure_runner: DDP wraps the model as it will train
        dist.check_batches(len(data.train), cfg.batch_size)
        dist.attach(runner)
        dev_loader, test_loader = dist.eval_shards(dev_loader), dist.eval_shards(test_loader)
    return runner, data, train_loader, dev_loader, test_loader


def prepare_data(cfg: TrainConfig, data=None):
    """The run's data: loaded (unless given), cut to `cfg.subset` images per part, and for a
    CIFAR-10 run on a GPU moved there once (batches are then cut on the GPU)."""
    from cnnlab.train.device import resolve_device

    data = data if data is not None else load_data(cfg.data, cfg.split)
    if cfg.subset is not None:
        data = subset(data, cfg.subset)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and data.train.images.dtype == torch.uint8:
        data = to_device(data, device)
    return data


def train_run(config: TrainConfig, data=None, resume=None, init_state=None,
              overwrite: bool = False, dist=None) -> dict:
    """Train, keep the best model, test it, write the run directory -> results dict.

    resume: a payload from `cnnlab.train.resume.load_resume` to continue (`config` is then the
    resumed run's, see `resume.resumed_config`). init_state: the state dict to start from when
    `config.init` names initial weights (read by the caller, e.g. with
    `cnnlab.interop.paddle.read_weights_file`). overwrite: replace another run's files in the
    run directory (a fresh run is refused there otherwise). Signals, NaN losses and last.pt are
    handled by `cnnlab.train.guard.safe_train`.

    `data` may be a preloaded `MnistData` (the reproduce command shares one between runs).
    dist: a `cnnlab.train.distributed.DistContext` to train data-parallel (every process calls
    train_run alike; rank 0 alone locks the directory and writes).
    """
    t_start = time.perf_counter()
    cfg = config.resolved()
    if cfg.init and resume is None and init_state is None:
        raise ValueError(f"config.init is {cfg.init!r}: pass its weights as init_state")
    run_id = resume["run_id"] if resume is not None else new_run_id()
    directory = run_directory
    if dist is not None:
        run_id = dist.broadcast_object(run_id)  # rank 0's: one run, one id
        directory = dist.run_directory
    # The fast operators' algorithms: the rules, the tuner or a resumed run's own (see
    # cnnlab.train.algorithms), in force until the test is done.
    with directory(cfg.out, resuming=resume is not None, overwrite=overwrite) as out, \
            RunAlgorithms(cfg, resume, dist) as algorithms:
        return _train_into(out, cfg, data, resume, init_state, run_id, t_start, algorithms, dist)


def _train_into(out: Path, cfg: TrainConfig, data, resume, init_state, run_id, t_start,
                algorithms: RunAlgorithms, dist=None) -> dict:
    writes = dist is None or dist.is_main
    phases = {}
    t = time.perf_counter()
    data = prepare_data(cfg, data)
    phases["data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    runner, data, train_loader, dev_loader, test_loader = build_run(cfg, data, run_id, dist)
    if init_state is not None and resume is None:  # a resumed run restores its own weights
        load_state_strict(runner.model, init_state, source=f"initial weights {cfg.init}")
    algorithms.watch(runner.model)
    runner.algorithms = algorithms  # its record goes into best.pt and last.pt
    phases["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    first_step = int(resume["step"]) if resume is not None else 0
    best_path = out / "best.pt"
    safe_train(runner, cfg, out, data, train_loader, dev_loader, resume=resume, save_path=best_path)
    phases["train_s"] = time.perf_counter() - t  # includes dev evaluations and checkpoint saves
    phases["train_eval_s"] = runner.timings["eval_s"]
    phases["train_save_s"] = runner.timings["save_s"]

    t = time.perf_counter()
    if writes:
        runner.write_history(out / "history.json")
        plot_training_loss_acc(runner, out / "curves.png")
    phases["outputs_s"] = time.perf_counter() - t

    # Test the best model, as the lab does; with no finite dev score there is none: test the last.
    t = time.perf_counter()
    tested = "best" if _load_best_for_test(runner, best_path, dist) else "last"
    test_score, test_loss = runner.evaluate(test_loader)
    phases["test_s"] = time.perf_counter() - t
    if not cfg.quiet:
        print(f"[Test] accuracy/loss: {test_score:.4f}/{test_loss:.4f}", flush=True)

    results = {
        "model": cfg.model,
        "seed": cfg.seed,
        "steps": runner.global_step,
        "best_dev_score": runner.history()["best_score"],
        "best_step": runner.best_step,
        "final_dev_score": runner.dev_scores[-1][1] if runner.dev_scores else None,
        "test_acc": test_score,
        "test_loss": test_loss,
        "test_n": len(data.test),
        "tested_model": tested,
        "train_epoch_losses": list(runner.train_epoch_losses),
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "algorithms": algorithms.summary(),
        "device": str(runner.device),
        "train_images_per_s": _images_per_second(phases, first_step, runner.global_step,
                                                  len(data.train), cfg.batch_size),
        "run_dir": str(out),
        "files": {name: str(out / name) for name in
                  ("best.pt", "last.pt", "history.json", "curves.png", "run.json")},
    }
    if dist is not None:
        results["distributed"] = dist.describe()
    wall = time.perf_counter() - t_start
    results["wall_s"] = round(wall, 3)
    if writes:
        write_run_json(out / "run.json", cfg.to_dict(), results, wall, run_id=run_id)
    return results


def _images_per_second(phases, first_step, last_step, n, batch):
    """Training throughput of this call: the images of steps first_step..last_step-1 (the last
    batch of an epoch may be short) over the time of the steps alone (dev evaluations and
    checkpoint saves left out); None when no step ran."""
    per_epoch = -(-n // batch)
    images = sum(batch if s % per_epoch < per_epoch - 1 else n - (per_epoch - 1) * batch
                 for s in range(first_step, last_step))
    steps_s = phases["train_s"] - phases["train_eval_s"] - phases["train_save_s"]
    return round(images / steps_s, 1) if images and steps_s > 0 else None


def _load_best_for_test(runner, best_path: Path, dist) -> bool:
    """Load this run's best.pt for the test -> whether there was one; data-parallel: rank 0
    reads it and sends its weights to every process."""
    loaded = (dist is None or dist.is_main) and runner.best_step is not None and \
        _load_own_best(runner, best_path)
    if dist is not None:
        loaded = dist.broadcast_object(loaded)
        if loaded:
            dist.broadcast_state(runner.model)
    return bool(loaded)


def _load_own_best(runner, best_path: Path) -> bool:
    """Load best.pt into the runner's model if this run wrote it -> whether it did."""
    if not best_path.is_file():
        return False
    payload = load_checkpoint(best_path, map_location=runner.device)
    if payload.get("run_id") != runner.run_id:
        return False
    load_state_strict(runner.model, payload["state_dict"], source=f"checkpoint {best_path}")
    return True
