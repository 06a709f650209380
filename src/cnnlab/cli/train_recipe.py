"""The part-2 options of `cnnlab train`: `--recipe lab|fast` on CIFAR-10 and the settings a
recipe makes (each can be given to override it), `--subset`, `--ops`, `--amp`,
`--channels-last`, `--compile`, `--tta`.

Every option here defaults to None ("the recipe's value"); `config_fields(args)` passes them to
`TrainConfig`, which resolves them (cnnlab.train.config, cnnlab.train.recipes).
"""

from __future__ import annotations

import argparse

from cnnlab.data.sources import parse_source
from cnnlab.errors import UserError
from cnnlab.train.recipes import RECIPES

# command-line dest -> TrainConfig field (a resumed run may not change them)
SETTINGS = {"recipe": "recipe", "subset": "subset", "amp": "amp", "channels_last": "channels_last",
            "tta": "tta", "augment": "augment", "normalize": "normalize",
            "label_smoothing": "label_smoothing", "schedule": "schedule", "warmup": "warmup",
            "momentum": "momentum", "nesterov": "nesterov", "weight_init": "weight_init"}

RECIPE_HELP = """\
CIFAR-10 (part 2 of the lab): --data cifar10:PATH trains with a recipe, "lab" unless --recipe
says otherwise; MODEL may then be left out (the recipe's model). Any option given explicitly
overrides the recipe's value; run.json records the resolved settings and the recipe.
  lab   {lab[model]}: Adam lr {lab[lr]}, weight decay {lab[weight_decay]}, batch {lab[batch_size]}, \
{lab[epochs]} epochs,
        log/eval every {lab[eval_steps]:,} steps, the notebook's mean/std, no augmentation, float32
  fast  {fast[model]}: SGD Nesterov {fast[momentum]}, one-cycle to lr {fast[lr]}, weight decay \
{fast[weight_decay]},
        batch {fast[batch_size]}, {fast[epochs]} epochs, label smoothing {fast[label_smoothing]}, \
crop+flip on the device,
        bf16 and channels-last on CUDA, flip TTA at evaluation
--subset N trains and tests on the first N images of each part: a quick look on a CPU.
"""


def add_arguments(p) -> None:
    """Add the part-2 options to the `cnnlab train` parser `p`."""
    g = p.add_argument_group("part 2: CIFAR-10 recipes (defaults: the recipe's)")
    g.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help="lab: the course notebook exactly; fast: ResNet18 (CIFAR stem) with the "
                        "fast CIFAR trainers' methods (default for cifar10 data: lab)")
    g.add_argument("--subset", type=int, default=None, metavar="N",
                   help="use only the first N images of each part (train, dev, test)")
    g.add_argument("--ops", choices=("native", "fast"), default=None,
                   help="run the model's convolutions and pooling on torch's (native) or on "
                        "cnnlab's own operators (fast); works on CPU and CUDA")
    g.add_argument("--amp", choices=("off", "bf16", "fp16", "auto"), default=None,
                   help="mixed precision: autocast to bf16 or fp16 (loss scaling) with float32 "
                        "weights and BatchNorm; auto = bf16 on CUDA, off on a CPU")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last model and batches (fast recipe: on CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation in every evaluation")
    g.add_argument("--augment", choices=("none", "crop-flip"), default=None,
                   help="crop-flip: random 32x32 crops of the image reflect-padded by 4 and "
                        "random horizontal flips, on the device")
    g.add_argument("--normalize", choices=("lab", "channel"), default=None,
                   help="lab: the notebook's mean/std; channel: the true per-channel std")
    g.add_argument("--label-smoothing", type=float, default=None, metavar="X",
                   help="label smoothing of the training loss")
    g.add_argument("--schedule", choices=("constant", "onecycle"), default=None,
                   help="learning rate: constant, or one-cycle (warm-up, linear decay) per batch")
    g.add_argument("--warmup", type=float, default=None, metavar="F",
                   help="one-cycle: fraction of the steps the learning rate rises")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="SGD with Nesterov momentum")


def epilog() -> str:
    return RECIPE_HELP.format(**RECIPES)


def fill_model(args) -> None:
    """MODEL left out: the recipe's model on CIFAR-10 (a resumed run names its own)."""
    if args.model is not None or getattr(args, "resume", None):
        return
    if getattr(args, "recipe", None) or parse_source(args.data)[0] == "cifar10":
        args.model = RECIPES[args.recipe or "lab"]["model"]
        return
    raise UserError("no MODEL given: name one (e.g. lenet), or train on CIFAR-10 with "
                    "--data cifar10:PATH [--recipe lab|fast]")


def merge_ops(args) -> None:
    """--ops is the part-2 name of --conv-impl: one value in args.conv_impl."""
    ops = getattr(args, "ops", None)
    if ops is None:
        return
    if args.conv_impl not in (None, ops):
        raise UserError(f"--ops {ops} and --conv-impl {args.conv_impl} disagree: give one")
    args.conv_impl = ops


def config_fields(args) -> dict:
    """The TrainConfig fields of the part-2 options."""
    fields = {field: getattr(args, dest, None) for dest, field in SETTINGS.items()}
    fields["compile"] = bool(getattr(args, "compile", False))
    return fields
