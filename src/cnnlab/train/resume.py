"""Resuming a run from its `last.pt`: find and check the checkpoint, rebuild the run's config,
and put the model, trainer, random states and data order back exactly where they were.

`cnnlab train MODEL --epochs N --resume DIR_OR_CKPT` continues the run in its own directory up to
N epochs in total; with the same settings (and `--deterministic` on CPU) the result equals an
uninterrupted run bit for bit.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cnnlab.errors import CorruptCheckpointError, UserError
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.checkpoint_fields import check_resumable
from cnnlab.train.loading import load_state_strict
from cnnlab.train.rng import restore_rng

# Settings that change the result of a run: a resumed run keeps the checkpoint's values.
RESULT_SETTINGS = ("model", "data", "split", "batch_size", "lr", "optimizer", "weight_decay", "seed",
                   "log_steps", "eval_steps", "model_kwargs", "deterministic", "skip_nonfinite",
                   "recipe", "momentum", "nesterov", "label_smoothing", "schedule", "warmup",
                   "augment", "normalize", "amp", "channels_last", "tta", "subset", "weight_init")


def find_checkpoint(path) -> Path:
    """DIR -> DIR/last.pt; a file as it is. UserError if there is nothing resumable there."""
    path = Path(path)
    if path.is_dir():
        last = path / "last.pt"
        if not last.is_file():
            raise UserError(f"--resume {path}: no last.pt in this directory (a run writes it at "
                            "its first evaluation or epoch end)")
        return last
    if not path.exists():
        raise UserError(f"--resume {path}: no such file or directory")
    return path


def load_resume(path, model_name: str | None = None) -> tuple[Path, dict]:
    """-> (checkpoint path, payload) of a resumable checkpoint, loaded safely and checked."""
    path = find_checkpoint(path)
    payload = load_checkpoint(path)
    if not payload.get("resumable"):
        raise UserError(f"--resume {path}: this checkpoint holds weights only (best.pt is not "
                        f"resumable); resume from {path.parent / 'last.pt'}")
    check_resumable(payload, path)
    stored = payload["model"]["name"]
    if model_name is not None and stored != model_name:
        raise UserError(f"--resume {path}: that run trains {stored}, not {model_name}")
    return path, payload


def resumed_config(payload: dict, path: Path, epochs: int | None, explicit: dict | None = None,
                   runtime: dict | None = None) -> dict:
    """The config of the run being resumed (a dict for `TrainConfig.from_dict`), with `epochs`
    total epochs (None: the run's own), its own directory, and `runtime` settings (device,
    loader, quiet ...). A one-cycle schedule is laid out for the run's epochs: it cannot change.

    explicit: settings the user gave on the command line; one that differs from the stored run
    is a UserError (a resumed run cannot change what it computes).
    """
    cfg = dict(payload["config"])
    done = int(payload["epoch"])
    if epochs is None:
        epochs = int(cfg.get("epochs") or done)
    if cfg.get("schedule") == "onecycle" and epochs != cfg.get("epochs"):
        raise UserError(f"--epochs {epochs}: the run in {path.parent} follows a one-cycle "
                        f"schedule laid out for {cfg.get('epochs')} epochs; resume it with "
                        f"--epochs {cfg.get('epochs')} (or start a new run)")
    if epochs < done:
        raise UserError(f"--epochs {epochs}: the run in {path.parent} has already completed {done} "
                        f"epochs; ask for at least {done}")
    for name, value in (explicit or {}).items():
        if name in RESULT_SETTINGS and name in cfg and value != cfg[name]:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {value} differs from the run being resumed ({cfg[name]}); a "
                            "resumed run keeps its settings (start a new run with another --out)")
    out = explicit.get("out") if explicit else None
    if out is not None and Path(out).resolve() != path.parent.resolve():
        raise UserError(f"--out {out}: a resumed run continues in its own directory {path.parent}")
    cfg.update(runtime or {})
    cfg["epochs"] = int(epochs)
    cfg["out"] = str(path.parent)
    return cfg


def restore_run(runner, payload: dict, train_loader, guard=None, best_path=None) -> None:
    """Put `runner` (run id, model, optimizer, scheduler, step, histories, best score), every RNG
    and the data order back to the state saved in `payload` (a `load_resume` payload); the next
    `runner.train` continues there."""
    steps = len(train_loader)
    if payload["steps_per_epoch"] not in (0, steps):
        raise UserError(f"the resumed run had {payload['steps_per_epoch']} steps per epoch, this "
                        f"data and batch size give {steps}; resume with the same data and settings")
    load_state_strict(runner.model, payload["state_dict"], source="the resumed checkpoint")
    try:
        runner.load_state_dict(payload)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:  # torch's optimizer loading
        raise CorruptCheckpointError(f"the resumed checkpoint's optimizer or scheduler state does "
                                     f"not fit this model: {err}") from err
    runner.run_id = payload["run_id"]
    # best.pt may be ahead of last.pt (saved first at the same evaluation, then interrupted):
    # never let a resumed run overwrite a better best.pt with a worse model.
    best_on_disk = _best_on_disk(best_path, runner.run_id)
    if best_on_disk is not None and not (runner.best_score >= best_on_disk[0]):
        runner.best_score, runner.best_step = best_on_disk
    restore_rng(payload["rng"], getattr(train_loader, "generator", None))
    transform = getattr(runner, "batch_transform", None)
    if "augment" in payload["rng"] and transform is not None:
        transform.set_state(payload["rng"]["augment"])
    if guard is not None:
        guard.skipped_steps = list(payload.get("skipped_steps", []))
        guard.last_saved_step = payload["step"]


def _best_on_disk(best_path, run_id: str):
    """-> (best score, its step) recorded in best.pt when this run (`run_id`) wrote it, else None:
    a best.pt of another run is never taken for this run's."""
    if best_path is None or not Path(best_path).is_file():
        return None
    try:
        payload = load_checkpoint(best_path)
    except UserError:
        return None  # a damaged best.pt is replaced by the next best model
    if payload.get("run_id") != run_id or payload.get("best_score") is None:
        return None
    # best.pt is written after the update of the step it scores: its "step" counts that update.
    return float(payload["best_score"]), int(payload.get("step", 0)) - 1


def resume_command(model: str, epochs: int, run_dir, extra: list[str] | None = None) -> str:
    """The exact command that continues a stopped run."""
    words = ["cnnlab", "train", model, "--epochs", str(epochs), "--resume", str(run_dir), *(extra or [])]
    return " ".join(shlex.quote(w) for w in words)
