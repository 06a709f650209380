"""`Runner`: the lab's RunnerV3 (nndl) in PyTorch — train, evaluate, predict, save, load.

The contract follows the lab (seed text §5.3.3-5.3.5):
- `train(train_loader, dev_loader, num_epochs, log_steps, eval_steps, save_path)`; the step index
  `s` counts optimizer updates from 0. The loss of step `s` is logged when `s % log_steps == 0`
  (so step 0 is logged); after the update of step `s` the model is evaluated on the dev set when
  `s > 0 and (s % eval_steps == 0 or s == total_steps - 1)` — with 80 steps: 15, 30, 45, 60, 75, 79.
- The model is saved to `save_path` whenever the dev score strictly improves on the best so far
  (the first finite score counts as an improvement; a NaN score never does).
- `evaluate(loader) -> (score, loss)`, both averaged over samples (the lab averages the loss over
  batches, which over-weights a short last batch). `loss_fn` must return the batch mean, as
  `F.cross_entropy` does.
- Histories as plain floats: `train_step_losses` [(step, loss)], `dev_losses` [(step, loss)],
  `dev_scores` [(step, score)], `train_epoch_losses` [loss] (sample-weighted epoch means).

All mutable training state (step, epoch, best score, histories, optimizer, scheduler) lives on the
Runner and round-trips through `state_dict()` / `load_state_dict()`; every checkpoint is built by
`_checkpoint_payload()` and written by `cnnlab.train.checkpoint.save_checkpoint` (atomic, hashed).

Part 2 (CIFAR-10) hooks, set by `cnnlab.train.recipes.configure_runner` and off for part 1:
`batch_transform(x, train)` between the loader and the model (normalise and augment on the
device), `precision` (autocast, backward and optimizer step: cnnlab.train.amp), `eval_loss_fn`
(dev/test loss when the training loss is label-smoothed), `tta` (flip test-time augmentation)
and `scheduler_per_step` (a one-cycle schedule steps after every batch).
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from pathlib import Path

import torch

from cnnlab.atomic import write_json
from cnnlab.errors import UserError
from cnnlab.train import checkpoint as ckpt
from cnnlab.train.amp import Precision
from cnnlab.train.batches import flip_tta
from cnnlab.train.device import resolve_device
from cnnlab.train.progress import TimeEstimate, images_per_second_column


class Runner:
    """Trains `model` with `optimizer` on `loss_fn`, scoring the dev set with `metric`.

    device: "auto" | "cpu" | "cuda"; the model is moved there, batches are moved per step.
    scheduler: optional LR scheduler, stepped once per epoch.
    progress: show a rich progress bar (only when stdout is a terminal).
    log: print the lab's "[Train] ..." / "[Evaluate] ..." lines.
    model_spec: {"name", "kwargs"} for `cnnlab.models.build_model`, stored in checkpoints so
        `checkpoint.load_model` can rebuild the model; config: the run's settings, stored too.
    run_id: this run's id, stored in every checkpoint and history it writes (default: a new
        uuid4; a resumed run takes its checkpoint's).
    """

    def __init__(self, model, optimizer, loss_fn, metric, device="auto", scheduler=None,
                 progress=True, log=True, model_spec=None, config=None, run_id=None):
        self.device = resolve_device(device)
        self.model = model.to(self.device)  # in place: the optimizer keeps its parameters
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metric = metric
        self.scheduler = scheduler
        self.progress = progress
        self.log = log
        self.model_spec = dict(model_spec or {"name": type(model).__name__, "kwargs": {}})
        self.config = dict(config or {})
        self.run_id = run_id or new_run_id()
        self._bar = None
        # wall time spent evaluating / saving best.pt and (by the guard) last.pt
        self.timings = {"eval_s": 0.0, "save_s": 0.0}
        self.guard = None  # optional cnnlab.train.guard.TrainGuard: last.pt, signals, NaN losses
        self.batch_transform = None      # callable(x, train) -> model input, on the device
        self.precision = Precision()     # float32: loss.backward(), optimizer.step()
        self.eval_loss_fn = None         # None: loss_fn
        self.tta = False
        self.scheduler_per_step = False
        self.dist = None   # optional cnnlab.train.distributed.DistContext: data-parallel training
        # optional cnnlab.train.algorithms.RunAlgorithms: the fast operators' algorithms this
        # run used, stored in every checkpoint (a resumed run pins them)
        self.algorithms = None
        self.reset_state()

    # ------------------------------------------------------------------ state
    def reset_state(self):
        """Training state of a fresh run (the model and optimizer are left as they are)."""
        self.global_step = 0      # optimizer updates done; the next step has this index
        self.epoch = 0            # epochs completed
        self.best_score = -math.inf
        self.best_step = None
        self.train_step_losses: list[tuple[int, float]] = []
        self.dev_losses: list[tuple[int, float]] = []
        self.dev_scores: list[tuple[int, float]] = []
        self.train_epoch_losses: list[float] = []
        self._epoch_loss_sum = 0.0   # sample-weighted loss sum of the current epoch so far
        self._epoch_samples = 0
        self._pending = []           # (step, detached loss, batch size) not yet turned into floats

    def state_dict(self) -> dict:
        """Everything that changes while training, except the model weights."""
        self._flush()
        return {
            "step": self.global_step,
            "epoch": self.epoch,
            "best_score": None if self.best_score == -math.inf else self.best_score,
            "best_step": self.best_step,
            "history": self.history(),
            "epoch_partial": {"loss_sum": self._epoch_loss_sum, "samples": self._epoch_samples},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict):
        self.reset_state()
        self.global_step = int(state["step"])
        self.epoch = int(state["epoch"])
        best = state.get("best_score")
        self.best_score = -math.inf if best is None else float(best)
        self.best_step = state.get("best_step")
        hist = state.get("history") or {}
        self.train_step_losses = [(int(s), float(v)) for s, v in hist.get("train_step_losses", [])]
        self.dev_losses = [(int(s), float(v)) for s, v in hist.get("dev_losses", [])]
        self.dev_scores = [(int(s), float(v)) for s, v in hist.get("dev_scores", [])]
        self.train_epoch_losses = [float(v) for v in hist.get("train_epoch_losses", [])]
        partial = state.get("epoch_partial") or {}
        self._epoch_loss_sum = float(partial.get("loss_sum", 0.0))
        self._epoch_samples = int(partial.get("samples", 0))
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("grad_scaler"))

    def history(self) -> dict:
        """The recorded curves as JSON-ready plain numbers."""
        self._flush()
        return {
            "train_step_losses": [list(p) for p in self.train_step_losses],
            "dev_losses": [list(p) for p in self.dev_losses],
            "dev_scores": [list(p) for p in self.dev_scores],
            "train_epoch_losses": list(self.train_epoch_losses),
            "best_score": None if self.best_score == -math.inf else self.best_score,
            "best_step": self.best_step,
        }

    def write_history(self, path) -> Path:
        """Write `history()` and the run id as JSON (atomically; a NaN score becomes null)."""
        return write_json(path, {"run_id": self.run_id, **self.history()})

    # ------------------------------------------------------------- checkpoints
    def _checkpoint_payload(self, full: bool = False) -> dict:
        """The one place a checkpoint payload is built.

        full=False (best.pt): weights, model spec, config, the step/score they belong to, and
        the fast operators' algorithms used so far (`algorithms`, when set).
        full=True: also the whole trainer `state_dict()` (optimizer, scheduler, histories).
        """
        extra = {"run_id": self.run_id, "config": self.config, "step": self.global_step,
                 "epoch": self.epoch,
                 "best_score": None if self.best_score == -math.inf else self.best_score}
        if full:
            extra.update(self.state_dict())
        if self.dist is not None:
            extra["distributed"] = self.dist.describe()
        if self.algorithms is not None:
            extra["algorithms"] = self.algorithms.record()
        return ckpt.model_payload(self.model_spec["name"], self.model_spec.get("kwargs", {}),
                                  self.model, **extra)

    def save_model(self, path, full: bool = False) -> Path:
        if self.dist is not None and not self.dist.is_main:
            return Path(path)  # data-parallel: rank 0 writes (every process holds the same model)
        return ckpt.save_checkpoint(path, self._checkpoint_payload(full=full))

    def load_model(self, path):
        """Load the weights of a checkpoint written by `save_model` into this Runner's model."""
        from cnnlab.train.loading import load_state_strict  # one-line missing/unexpected/shape report

        payload = ckpt.load_checkpoint(path, map_location=self.device)
        load_state_strict(self.model, payload.get("state_dict"), source=f"checkpoint {path}")
        return payload

    # ---------------------------------------------------------------- training
    def train(self, train_loader, dev_loader=None, num_epochs=0, log_steps=100, eval_steps=0,
              save_path="best.pt"):
        """Train up to `num_epochs` epochs in total (continuing from `self.epoch`)."""
        if eval_steps and dev_loader is None:
            raise ValueError("eval_steps > 0 needs a dev_loader")
        steps_per_epoch = len(train_loader)
        total_steps = num_epochs * steps_per_epoch
        self._log_steps, self._eval_steps = log_steps, eval_steps
        self._total_steps, self._num_epochs = total_steps, num_epochs
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        estimate = self._time_estimate(train_loader, dev_loader, total_steps)
        with self._progress_bar(total_steps, getattr(train_loader, "batch_size", None) or 1):
            while self.epoch < num_epochs:
                # Steps of this epoch already done (non-zero only when resuming mid-epoch; the
                # loader must then replay that epoch's order).
                if self.guard is not None:
                    self.guard.epoch_start(self, train_loader)
                skip = self.global_step - self.epoch * steps_per_epoch
                for i, (x, y) in enumerate(train_loader):
                    if i < skip:
                        continue
                    self._train_step(x, y)
                    estimate.after_step()
                    step = self.global_step - 1
                    if eval_steps and step > 0 and (step % eval_steps == 0 or step == total_steps - 1):
                        self._evaluate_and_save(dev_loader, step, save_path)
                    if self.guard is not None:
                        self.guard.after_step(self)  # a signal: save last.pt and stop
                self._end_epoch()
                if self.guard is not None:
                    self.guard.epoch_end(self)
        self._print("[Train] Training done!")
        return self.history()

    def _train_step(self, x, y):
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.batch_transform is not None:
            x = self.batch_transform(x, train=True)
        step = self.global_step
        with self.precision.autocast():
            if self.dist is not None:  # data-parallel: this process's shard, its loss scaled
                loss, shown, n = self.dist.forward_loss(self, x, y)
            else:
                loss = self.loss_fn(self.model(x), y)
                shown, n = loss, y.shape[0]
        if self.guard is not None and not self.guard.loss_ok(self, shown, step):
            self.global_step += 1  # a non-finite loss, skipped on request: no update
            return
        # Losses stay tensors until a log/eval/epoch end needs them: no sync on every step.
        self._pending.append((step, shown.detach(), n))
        if self._log_steps and step % self._log_steps == 0:
            self._flush()
            self._print(f"[Train] epoch: {self.epoch}/{self._num_epochs}, step: {step}/"
                        f"{self._total_steps}, loss: {self.train_step_losses[-1][1]:.5f}")
        self.precision.backward(loss)
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler_per_step and self.global_step < self._total_steps:
            self.scheduler.step()  # the lr of the next step (none after the last one)
        if self._bar is not None:
            self._bar[0].update(self._bar[1], advance=1)

    def _evaluate_and_save(self, dev_loader, step, save_path):
        t0 = time.perf_counter()
        score, loss = self.evaluate(dev_loader, global_step=step)
        t1 = time.perf_counter()
        self.timings["eval_s"] += t1 - t0
        self._print(f"[Evaluate] dev score: {score:.5f}, dev loss: {loss:.5f}")
        if score > self.best_score:  # False for NaN: a NaN score is never best
            old = self.best_score
            self.best_score, self.best_step = score, step
            if save_path:
                if self.guard is not None:
                    self.guard.before_save(self)  # never save NaN/inf weights
                self.save_model(save_path)
                self.timings["save_s"] += time.perf_counter() - t1
            self._print(f"[Evaluate] best accuracy performence has been updated: "
                        f"{max(old, 0.0):.5f} --> {score:.5f}")
        self.model.train()
        if self.guard is not None:
            self.guard.after_eval(self, step)  # resumable last.pt

    def _end_epoch(self):
        self._flush()
        self.train_epoch_losses.append(self._epoch_loss_sum / max(self._epoch_samples, 1))
        self._epoch_loss_sum, self._epoch_samples = 0.0, 0
        self.epoch += 1
        if self.scheduler is not None and not self.scheduler_per_step:
            self.scheduler.step()

    def _flush(self):
        """Turn pending loss tensors into floats (one device sync for all of them)."""
        if not self._pending:
            return
        values = torch.stack([p[1] for p in self._pending]).float().tolist()
        for (step, _, n), v in zip(self._pending, values):
            self.train_step_losses.append((step, v))
            self._epoch_loss_sum += v * n
            self._epoch_samples += n
        self._pending = []
        if self._bar is not None:
            self._bar[0].update(self._bar[1], loss=f"{values[-1]:.4f}")

    # -------------------------------------------------------- evaluate/predict
    @torch.no_grad()
    def evaluate(self, loader, global_step=None):
        """-> (score, loss) over every sample of `loader`; recorded in the history when
        `global_step` is given."""
        was_training = self.model.training
        self.model.eval()
        self.metric.reset()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        n = 0
        loss_fn = self.eval_loss_fn or self.loss_fn
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.batch_transform is not None:
                x = self.batch_transform(x, train=False)
            with self.precision.autocast():
                logits = flip_tta(self.model, x) if self.tta else self.model(x)
            total_loss += loss_fn(logits.float(), y).double() * y.shape[0]
            self.metric.update(logits, y)
            n += y.shape[0]
        self.model.train(was_training)
        if self.dist is not None:  # each process saw its share of the batches: sum them all
            total_loss, n = self.dist.reduce_evaluation(self.metric, total_loss, n)
        if n == 0:
            raise UserError("cannot evaluate on an empty data set")
        score = float(self.metric.accumulate())
        loss = float(total_loss) / n
        if global_step is not None:
            self.dev_losses.append((int(global_step), loss))
            self.dev_scores.append((int(global_step), score))
            if self._bar is not None:
                self._bar[0].update(self._bar[1], dev=f"{score:.4f}")
        return score, loss

    @torch.no_grad()
    def predict(self, x):
        """Model outputs (logits) for a batch x [B,C,H,W], in eval mode (through the batch
        transform and TTA, as evaluate)."""
        was_training = self.model.training
        self.model.eval()
        x = x.to(self.device)
        if self.batch_transform is not None:
            x = self.batch_transform(x, train=False)
        with self.precision.autocast():
            out = flip_tta(self.model, x) if self.tta else self.model(x)
        self.model.train(was_training)
        return out

    # ----------------------------------------------------------------- output
    def _print(self, line):
        if not self.log:
            return
        if self._bar is not None:
            self._bar[0].console.print(line, highlight=False, markup=False)
        else:
            print(line, flush=True)

    def _progress_bar(self, total, batch=1):
        return _Bar(self, total, batch)

    def _time_estimate(self, train_loader, dev_loader, total_steps) -> TimeEstimate:
        """Prints how long the run will take once its first steps are timed, if long."""
        steps = total_steps - self.global_step
        batch = getattr(train_loader, "batch_size", None) or 1
        try:
            dev_images = len(dev_loader.dataset)
        except (AttributeError, TypeError):  # no loader, or one without a sized dataset
            dev_images = 0
        evals = 0
        if self._eval_steps:
            evals = sum(1 for s in range(max(self.global_step, 1), total_steps)
                        if s % self._eval_steps == 0 or s == total_steps - 1)
        evaluated = evals * dev_images * (2 if self.tta else 1)
        return TimeEstimate(steps, batch, evaluated, self.device, self._print)


class _Bar:
    """Context manager: a rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, runner, total, batch=1):
        self.runner, self.total, self.batch = runner, total, batch

    def __enter__(self):
        if not (self.runner.progress and sys.stdout.isatty()):
            return None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]}  dev {task.fields[dev]}"),
                       images_per_second_column(), TimeElapsedColumn(), TimeRemainingColumn(),
                       transient=False)
        task = bar.add_task("train", total=self.total, completed=self.runner.global_step,
                            loss="-", dev="-", batch=self.batch)
        bar.start()
        self.runner._bar = (bar, task)
        return bar

    def __exit__(self, *exc):
        if self.runner._bar is not None:
            self.runner._bar[0].stop()
            self.runner._bar = None
        return False


def new_run_id() -> str:
    """A fresh run id: 32 hex digits."""
    return uuid.uuid4().hex
