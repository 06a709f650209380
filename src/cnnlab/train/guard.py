"""`TrainGuard`: what makes a long run safe to interrupt -- resumable `last.pt` checkpoints, a
graceful stop on Ctrl-C / SIGTERM, and a hard stop (or skip) on a non-finite loss.

The Runner calls its hooks (`runner.guard = TrainGuard(...)`):
    epoch_start(runner, loader)   before the first batch of an epoch
    loss_ok(runner, loss, step)   before backward; False = skip this step (--skip-nonfinite)
    before_save(runner)           before best.pt is written: refuses NaN/inf weights
    after_eval(runner, step)      after a dev evaluation (and the best.pt save)
    after_step(runner)            after every step (and its evaluation)
    epoch_end(runner)             after the epoch's bookkeeping and the scheduler step

Exact resume needs the data order: `last.pt` stores, besides every RNG state at save time, the
data generator's state at the START of the current epoch and the position within it; the resumed
run replays that epoch's order and skips the batches already trained on. The augmentation
generator of the Runner's batch transform (CIFAR-10) is stored as it is at save time (rng
"augment"): skipped batches draw nothing from it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.train.rng import capture_rng

EXIT_NONFINITE = 3  # exit status of `cnnlab train` when the loss is not finite


class NonFiniteLossError(CnnlabError):
    """The training loss (or the weights) became NaN/inf; training stopped, nothing saved."""

    exit_code = EXIT_NONFINITE


class TrainingStopped(CnnlabError):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, signal_name: str, checkpoint: Path | None, step: int, epoch: int):
        self.exit_code = 128 + int(signum)
        self.signal_name, self.checkpoint, self.step, self.epoch = signal_name, checkpoint, step, epoch
        where = f"saved {checkpoint}" if checkpoint else "no checkpoint saved (no run directory)"
        super().__init__(f"{signal_name}: training stopped after step {step}; {where}")


class TrainGuard:
    """last_path: where `last.pt` goes (None: no resumable checkpoints); stop: an object with
    `.requested`, `.signum`, `.signal_name` (a `StopOnSignal`); skip_nonfinite: skip a step
    whose loss is NaN/inf instead of stopping; log: print(line) for messages; writes: False on
    the processes of a data-parallel run other than rank 0 (they check everything alike but
    write nothing)."""

    def __init__(self, last_path=None, stop=None, skip_nonfinite=False, log=None, writes=True):
        self.last_path = Path(last_path) if last_path is not None else None
        self.writes = writes
        self.stop = stop
        self.skip_nonfinite = skip_nonfinite
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.generator: torch.Generator | None = None
        self.steps_per_epoch: int | None = None
        self.epoch_data_state: torch.Tensor | None = None  # data generator at this epoch's start
        self.skipped_steps: list[int] = []
        self.last_saved_step: int | None = None

    # ------------------------------------------------------------------ hooks
    def epoch_start(self, runner, loader) -> None:
        self.generator = getattr(loader, "generator", None)
        self.steps_per_epoch = len(loader)
        # When resuming mid-epoch the generator was set back to this epoch's start: same value.
        self.epoch_data_state = self.generator.get_state() if self.generator is not None else None

    def loss_ok(self, runner, loss: torch.Tensor, step: int) -> bool:
        if bool(torch.isfinite(loss).all()):
            return True
        value = loss.detach().float().item()
        where = self._where(runner, step)
        if self.skip_nonfinite:
            self.skipped_steps.append(step)
            self.log(f"[Train] non-finite loss ({value}) at step {step} ({where}): step skipped, "
                     "weights unchanged (--skip-nonfinite)")
            return False
        saved = (f"{self.last_path} holds step {self.last_saved_step}" if self.last_saved_step is not None
                 else "no checkpoint of this run was saved")
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at step {step} ({where}); training stopped and the "
            f"weights of this step were not saved ({saved}); try a lower --lr, or --skip-nonfinite "
            "to skip such steps"
        )

    def before_save(self, runner) -> None:
        check_finite_weights(runner.model, runner.global_step)

    def after_eval(self, runner, step: int) -> None:
        # The last step of an epoch is followed by the epoch-end save: one save is enough.
        if self.steps_per_epoch and (step + 1) % self.steps_per_epoch == 0:
            return
        self.save_last(runner)

    def after_step(self, runner) -> None:
        if self.stop is not None and self.stop.requested:
            path = self.save_last(runner)
            raise TrainingStopped(self.stop.signum, self.stop.signal_name, path,
                                  runner.global_step, runner.epoch)

    def epoch_end(self, runner) -> None:
        self.save_last(runner)

    # ------------------------------------------------------------------ saving
    def save_last(self, runner) -> Path | None:
        """Write the resumable `last.pt` (atomic); refuse if any weight is not finite."""
        if self.last_path is None:
            return None
        start = time.perf_counter()
        check_finite_weights(runner.model, runner.global_step)
        if self.writes:
            payload = runner._checkpoint_payload(full=True)
            payload.update(self.resume_state(runner))
            save_checkpoint(self.last_path, payload)
        self.last_saved_step = runner.global_step
        if hasattr(runner, "timings"):  # saving is not training: img/s leave it out
            runner.timings["save_s"] += time.perf_counter() - start
        return self.last_path

    def resume_state(self, runner) -> dict:
        """RNG states and the position in the data order, as `resume.restore_run` needs them."""
        steps_per_epoch = self.steps_per_epoch or 0
        epoch_step = runner.global_step - runner.epoch * steps_per_epoch  # batches of this epoch done
        rng = capture_rng()
        if self.generator is not None:
            # At an epoch boundary the generator already stands at the next epoch's start.
            rng["data"] = self.generator.get_state() if epoch_step == 0 else self.epoch_data_state
        transform = getattr(runner, "batch_transform", None)
        if transform is not None and transform.get_state() is not None:
            rng["augment"] = transform.get_state()
        return {"resumable": True, "rng": rng, "epoch_step": epoch_step,
                "steps_per_epoch": steps_per_epoch,
                "skipped_steps": list(self.skipped_steps)}

    def _where(self, runner, step: int) -> str:
        per_epoch = self.steps_per_epoch
        if per_epoch:
            return f"epoch {step // per_epoch + 1}, batch {step % per_epoch + 1} of {per_epoch}"
        return f"epoch {runner.epoch + 1}"


def check_finite_weights(model: torch.nn.Module, step: int | None = None) -> None:
    """NonFiniteLossError naming the first parameter/buffer with a NaN or inf value."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            at = f" after step {step - 1}" if step else ""
            raise NonFiniteLossError(
                f"the weights became non-finite{at} ({name} holds NaN/inf); training stopped and "
                "they were not saved; try a lower --lr"
            )


def train_guarded(runner, guard: TrainGuard, *args, **kwargs):
    """`runner.train(*args, **kwargs)` with `guard`'s hooks and a graceful SIGINT/SIGTERM stop.

    Raises TrainingStopped (after saving last.pt) on a signal, NonFiniteLossError on a NaN/inf
    loss (unless skipping). A signal arriving after the last step still stops the run: its
    last.pt is complete and resuming it only writes the remaining outputs.
    """
    from cnnlab.train.signals import StopOnSignal

    with StopOnSignal() as local_stop:
        # data-parallel: every process reads the same stop decision, after the same step
        stop = runner.dist.agreed_stop(local_stop) if runner.dist is not None else local_stop
        guard.stop = stop
        runner.guard = guard
        try:
            result = runner.train(*args, **kwargs)
        finally:
            runner.guard = None
        if stop.requested:
            saved = guard.last_path if guard.last_saved_step == runner.global_step else None
            raise TrainingStopped(stop.signum, stop.signal_name, saved, runner.global_step, runner.epoch)
    return result


def safe_train(runner, cfg, out, data, train_loader, dev_loader, resume: dict | None = None,
               save_path=None):
    """Train as `cnnlab train` does: check the data against the model, restore a resumed run,
    then `train_guarded` with `out/last.pt`. -> runner.train's result.

    cfg: a resolved TrainConfig; data: the loaded MnistData; resume: a payload from
    `resume.load_resume` (None for a fresh run).
    """
    from cnnlab.train.resume import restore_run
    from cnnlab.train.validate import check_data_for_model

    out = Path(out)
    parts = {f"{name} set": getattr(data, name, None) for name in ("train", "dev", "test")}
    check_data_for_model(runner.model, parts, cfg.model)
    save_path = Path(save_path) if save_path is not None else out / "best.pt"
    guard = TrainGuard(out / "last.pt", skip_nonfinite=getattr(cfg, "skip_nonfinite", False),
                       writes=runner.dist is None or runner.dist.is_main)
    if resume is not None:
        restore_run(runner, resume, train_loader, guard, best_path=save_path)
        if not getattr(cfg, "quiet", False):
            print(f"[Train] resuming at step {runner.global_step} (epoch {runner.epoch + 1}, "
                  f"batch {int(resume.get('epoch_step', 0)) + 1}) of {out}", flush=True)
    return train_guarded(runner, guard, train_loader, dev_loader, num_epochs=cfg.epochs,
                         log_steps=cfg.log_steps, eval_steps=cfg.eval_steps, save_path=save_path)
