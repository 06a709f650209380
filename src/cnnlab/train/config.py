"""`TrainConfig`: every setting of one training run, with the lab's per-model defaults and the
CIFAR-10 recipes of part 2.

The lab (seed text §5.3.3, §5.4.2-5.4.3; reference.md): SGD without momentum, batch 64, 5 epochs,
log and evaluate every 15 steps, seed 100; learning rate 0.1 for LeNet, 0.005 for ResNet18
without residual connections, 0.01 with them; weights initialised as Paddle initialises the
lab's layers (`weight_init="lab"`, see cnnlab.train.init). Part 2 of the lab (CIFAR-10) trains
its ResNet18 with Adam, lr 0.001, weight decay 0.005: those are the part-2 models' defaults.

A run on CIFAR-10 (`data="cifar10:PATH"`) follows a recipe (`cnnlab.train.recipes`: "lab", the
default, or "fast"). Resolution, for every field left None: the recipe's value, else the model's
LAB_DEFAULTS, else BASE (part 1's settings). A value given explicitly always wins.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from cnnlab.data.sources import parse_source
from cnnlab.errors import UserError
from cnnlab.train.recipes import NORMALIZATIONS, RECIPES, SCHEDULES, resolve_auto

# model -> defaults that differ from BASE
LAB_DEFAULTS = {
    "lenet": {"lr": 0.1},
    "lenet-native": {"lr": 0.1},
    "resnet18-plain": {"lr": 0.005},
    "resnet18": {"lr": 0.01},
    "resnet18-vision": {"lr": 0.001, "optimizer": "adam", "weight_decay": 0.005},
    "resnet18-cifar": {"lr": 0.001, "optimizer": "adam", "weight_decay": 0.005},
}
# The lab's part-1 settings: what a field left None becomes without a recipe or model default.
BASE = {"epochs": 5, "batch_size": 64, "seed": 100, "log_steps": 15, "eval_steps": 15,
        "lr": 0.01, "optimizer": "sgd", "weight_decay": 0.0, "momentum": 0.0, "nesterov": False,
        "label_smoothing": 0.0, "schedule": "constant", "warmup": 0.0, "augment": "none",
        "normalize": None, "amp": "off", "channels_last": False, "tta": False,
        "weight_init": "lab"}
OPTIMIZERS = ("sgd", "adam")
AUGMENTS = ("none", "crop-flip")
AMP_MODES = ("off", "bf16", "fp16", "auto")
DIST_TIMEOUT_S = 300  # data-parallel: a wait for the other processes longer than this fails
LOADERS = ("tensor", "torch")
# a word of a field's annotation -> the Python types it accepts (a bool is no int or float here)
_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                     "dict": (dict,), "None": (type(None),)}


@dataclass
class TrainConfig:
    """One training run. `None` means "the recipe's, else the lab's default for this model".

    out: the run directory (default runs/<model>); loader: "tensor" batches by indexing the
    cached tensors, "torch" uses torch.utils.data.DataLoader with `num_workers` (same batches).
    """

    model: str | None = None   # None: the recipe's model
    data: str = "bundled"
    split: str = "lab"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    seed: int | None = None
    log_steps: int | None = None
    eval_steps: int | None = None
    device: str = "auto"
    out: str | None = None
    quiet: bool = False
    model_kwargs: dict = field(default_factory=dict)
    loader: str = "tensor"
    num_workers: int = 0
    deterministic: bool = False   # seed everything, torch.use_deterministic_algorithms(True)
    skip_nonfinite: bool = False  # skip a step whose loss is NaN/inf instead of stopping (exit 3)
    init: str | None = None         # start from these weights: a cnnlab checkpoint or a .pdparams
    init_layout: str | None = None  # Paddle layout of a .pdparams `init` (None: detect it)
    weight_init: str | None = None  # "lab": Paddle's default initialisation (train/init.py); "torch"
    threads: int | None = None      # torch CPU threads for this run (None: torch's default)
    # Part 2 (CIFAR-10): the recipe and the settings it makes (cnnlab.train.recipes)
    recipe: str | None = None       # "lab" | "fast"; CIFAR-10 data without one: "lab"
    momentum: float | None = None   # SGD momentum
    nesterov: bool | None = None    # SGD with Nesterov momentum
    label_smoothing: float | None = None  # of the training loss (dev/test losses are plain)
    schedule: str | None = None     # "constant" lr, or "onecycle" stepped every batch
    warmup: float | None = None     # one-cycle: fraction of the steps the lr rises
    augment: str | None = None      # "none" | "crop-flip" (reflect pad 4, on the device)
    normalize: str | None = None    # CIFAR-10: "lab" (the notebook's std) | "channel" (true std)
    amp: str | None = None          # "off" | "bf16" | "fp16" | "auto" (bf16 on CUDA, else off)
    channels_last: bool | None = None  # channels-last model and batches (CUDA: faster convs)
    tta: bool | None = None         # evaluate on each image and its mirror image, logits averaged
    compile: bool = False           # torch.compile the model's forward
    subset: int | None = None       # only the first N images of each part (a quick look)

    def resolved(self) -> "TrainConfig":
        """A copy with every `None` replaced by the recipe's / the lab's default, validated."""
        from cnnlab.models import MODEL_NAMES

        cifar = parse_source(self.data)[0] == "cifar10"
        recipe = self.recipe or ("lab" if cifar else None)
        if recipe is not None and recipe not in RECIPES:
            raise UserError(f"unknown recipe {recipe!r}: expected {' or '.join(RECIPES)}")
        if recipe is not None and not cifar:
            raise UserError(f"recipe {recipe!r} trains on CIFAR-10: give --data cifar10:PATH "
                            f"(this run's data is {self.data!r})")
        preset = {k: v for k, v in RECIPES.get(recipe, {}).items() if k != "model"}
        model = self.model or RECIPES.get(recipe, {}).get("model")
        if model is None:
            raise UserError("no model given: name one (e.g. lenet) or a CIFAR-10 --recipe")
        if model not in MODEL_NAMES:
            raise UserError(f"unknown model {model!r}; known models: {', '.join(MODEL_NAMES)}")
        if self.normalize is not None and not cifar:
            raise UserError(f"normalize {self.normalize!r} applies to CIFAR-10 images; MNIST is "
                            "preprocessed as the lab does when it is loaded")
        cfg = dataclasses.replace(self, model=model, recipe=recipe,
                                  model_kwargs=dict(self.model_kwargs))
        for name, value in {**BASE, **LAB_DEFAULTS.get(model, {}), **preset}.items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        if cfg.out is None:
            cfg.out = f"runs/{cfg.model}"
        cfg.validate()
        resolve_auto(cfg)
        return cfg

    def validate(self):
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 0, "epochs", "an integer >= 0"),
            (isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size", "an integer > 0"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0), "lr", "a finite number > 0"),
            (self.weight_decay is None or (math.isfinite(self.weight_decay) and self.weight_decay >= 0),
             "weight_decay", "a finite number >= 0"),
            (isinstance(self.seed, int) and 0 <= self.seed < 2**63, "seed",
             "an integer in 0..2**63-1"),
            (self.optimizer is None or self.optimizer in OPTIMIZERS, "optimizer", " or ".join(OPTIMIZERS)),
            (isinstance(self.log_steps, int) and self.log_steps >= 0, "log_steps", "an integer >= 0"),
            (isinstance(self.eval_steps, int) and self.eval_steps >= 0, "eval_steps", "an integer >= 0"),
            (self.split in ("lab", "full"), "split", "lab or full"),
            (self.loader in LOADERS, "loader", " or ".join(LOADERS)),
            (self.weight_init in ("lab", "torch"), "weight_init", "lab or torch"),
            (self.threads is None or (isinstance(self.threads, int) and self.threads > 0),
             "threads", "an integer > 0"),
            (isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers", "an integer >= 0"),
            (self.momentum is None or (math.isfinite(self.momentum) and 0 <= self.momentum < 1),
             "momentum", "a number in [0, 1)"),
            (self.nesterov is None or isinstance(self.nesterov, bool), "nesterov", "True or False"),
            (self.label_smoothing is None or 0 <= self.label_smoothing < 1, "label_smoothing",
             "a number in [0, 1)"),
            (self.schedule is None or self.schedule in SCHEDULES, "schedule", " or ".join(SCHEDULES)),
            (self.warmup is None or 0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)"),
            (self.augment is None or self.augment in AUGMENTS, "augment", " or ".join(AUGMENTS)),
            (self.normalize is None or self.normalize in NORMALIZATIONS, "normalize",
             " or ".join(NORMALIZATIONS)),
            (self.amp is None or self.amp in AMP_MODES, "amp", ", ".join(AMP_MODES)),
            (self.channels_last in (None, True, False, "auto"), "channels_last", "True or False"),
            (self.tta is None or isinstance(self.tta, bool), "tta", "True or False"),
            (isinstance(self.compile, bool), "compile", "True or False"),
            (self.subset is None or (isinstance(self.subset, int) and self.subset >= 1),
             "subset", "an integer >= 1 (images per part)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise UserError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum):
            raise UserError("nesterov needs the sgd optimizer with a momentum > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Rebuild from `to_dict()` output, ignoring keys this version does not know; a known
        key with a value of the wrong type is a UserError."""
        problem = cls.type_problem(d)
        if problem:
            raise UserError(f"config field {problem}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def type_problem(cls, d: dict) -> str | None:
        """'epochs must be int, got str' for the first field of `d` whose value has the wrong
        type for its annotation (None when all fit; unknown keys are not looked at)."""
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            words = [w.strip() for w in str(f.type).split("|")]
            value = d[f.name]
            accepted = tuple(t for w in words for t in _ANNOTATION_TYPES[w])
            if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
                return f"{f.name} must be {' or '.join(words)}, got {type(value).__name__} {value!r}"
        return None
