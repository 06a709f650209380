"""The trustworthy-training side of `cnnlab train`: --resume, --overwrite, --workers,
--deterministic, --skip-nonfinite, and turning a signal or a NaN loss into a message and an exit
status.

Exit status: 0 done; 2 a user error (one line); 3 a non-finite loss; 130 / 143 stopped by
SIGINT / SIGTERM after saving a resumable DIR/last.pt (the message gives the resume command).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from cnnlab.cli import train_recipe
from cnnlab.errors import UserError

# command-line dest -> TrainConfig field, for the settings a resumed run may not change
_SETTINGS = {"data": "data", "split": "split", "batch_size": "batch_size", "lr": "lr",
             "optimizer": "optimizer", "weight_decay": "weight_decay", "seed": "seed",
             "log_steps": "log_steps", "eval_steps": "eval_steps", "out": "out",
             "deterministic": "deterministic", "skip_nonfinite": "skip_nonfinite",
             **train_recipe.SETTINGS}

RESUME_HELP = """\
Interrupting: Ctrl-C or SIGTERM finishes the current step, saves DIR/last.pt and prints the
command that resumes (exit status 130 / 143); a second signal quits at once. DIR/last.pt is
also written at every evaluation and epoch end, atomically. A NaN/inf loss stops the run with
exit status 3 (or is skipped with --skip-nonfinite); NaN weights are never saved.

Algorithms: cnnlab's fast conv/pool layers have several exact algorithms that round differently
(last bits). The autotuner picks them (CNNLAB_AUTOTUNE=on|cached|off, `cnnlab tune`);
--deterministic and data-parallel runs use the rules instead (CNNLAB_AUTOTUNE=off: they depend
on the shapes only, so reruns and processes agree whatever the tuner's cache holds). DIR/run.json
names each layer's algorithm ("algorithms"); last.pt and best.pt record them, and --resume pins
them before the first step, so a resumed run computes what the first did even after the cache or
cnnlab's rules changed.
"""


def add_arguments(p) -> None:
    """Add the options to the `cnnlab train` parser `p` (call after its other options)."""
    g = p.add_argument_group("resuming and safety")
    g.add_argument("--resume", metavar="DIR_OR_CKPT", default=None,
                   help="continue the run in DIR (its last.pt) or from a last.pt file, up to "
                        "--epochs epochs in total; the run keeps its own settings, directory "
                        "and fast-operator algorithms (recorded in last.pt)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in a DIR that holds another run: its best.pt, last.pt, "
                        "history.json, curves.png and run.json are removed first (nothing else)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="load batches with torch's DataLoader and N worker processes (default: "
                        "batches straight from the cached tensors; same batches either way)")
    g.add_argument("--deterministic", action="store_true",
                   help="seed everything, use only deterministic torch algorithms, and the "
                        "fast operators' rules rather than the autotuner's measured choices "
                        "(bit-identical reruns and resumes on CPU, whatever the tuner's cache)")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss is NaN/inf instead of stopping (exit status 3)")
    p.set_defaults(_train_parser=p)


def prepare(args, cfg):
    """-> (resolved TrainConfig, resume payload or None) for the parsed `args` and the config
    built from them; raises UserError for any bad value before anything is written."""
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.resume import load_resume, resumed_config
    from cnnlab.train.validate import check_int

    if args.epochs is not None:
        check_int("--epochs", args.epochs, 0)
    if args.batch_size is not None:
        check_int("--batch-size", args.batch_size, 1)
    if getattr(args, "subset", None) is not None:
        check_int("--subset", args.subset, 1)
    runtime = {"device": args.device, "quiet": args.quiet}
    if args.workers is not None:
        check_int("--workers", args.workers, 0)
        runtime.update(loader="torch", num_workers=args.workers)
    else:
        runtime.update(loader="tensor", num_workers=0)
    if args.resume and getattr(args, "overwrite", False):
        raise UserError("--resume continues the run in DIR, --overwrite replaces it: give one of "
                        "them")
    if not args.resume:
        cfg = dataclasses.replace(cfg, deterministic=args.deterministic,
                                  skip_nonfinite=args.skip_nonfinite, **runtime)
        return cfg.resolved(), None
    path, payload = load_resume(args.resume, args.model)
    parser = getattr(args, "_train_parser", None)
    explicit = {}
    for dest, field in _SETTINGS.items():
        value = getattr(args, dest, None)
        if parser is not None and value != parser.get_default(dest):
            explicit[field] = value
    if getattr(args, "conv_impl", None):
        stored = dict(payload["config"].get("model_kwargs") or {})
        explicit["model_kwargs"] = {**stored, "conv_impl": args.conv_impl}
    resumed = resumed_config(payload, path, args.epochs, explicit, runtime)
    return TrainConfig.from_dict(resumed).resolved(), payload


def call(train_run, cfg, resume, args, init_state=None, dist=None):
    """Run `train_run(cfg, resume=resume, ...)` -> its results dict, or an exit status (int)
    after printing why it stopped. dist: the data-parallel context, if any."""
    from cnnlab.train.guard import NonFiniteLossError, TrainingStopped
    from cnnlab.train.resume import resume_command

    out = Path(cfg.out)
    try:
        return train_run(cfg, resume=resume, init_state=init_state,
                         overwrite=getattr(args, "overwrite", False), dist=dist)
    except TrainingStopped as stop:
        extra = []
        if args.workers is not None:
            extra += ["--workers", str(args.workers)]
        if args.device != "auto":
            extra += ["--device", args.device]
        if args.quiet:
            extra.append("--quiet")
        if getattr(args, "nproc", None):
            extra += ["--nproc", str(args.nproc)]
        where = f"saved {stop.checkpoint}" if stop.checkpoint else "no new checkpoint could be saved"
        print(f"cnnlab train: stopped by {stop.signal_name} at step {stop.step} (epoch "
              f"{stop.epoch + 1}); {where}", file=sys.stderr)
        print(f"to resume: {resume_command(cfg.model, cfg.epochs, out, extra)}", file=sys.stderr,
              flush=True)
        return stop.exit_code
    except NonFiniteLossError as err:
        print(f"cnnlab train: error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
