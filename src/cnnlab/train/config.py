"""`TrainConfig`: every setting of one training run, with the lab's per-model defaults.

The lab (seed text §5.3.3, §5.4.2-5.4.3; reference.md): SGD without momentum, batch 64, 5 epochs,
log and evaluate every 15 steps, seed 100; learning rate 0.1 for LeNet, 0.005 for ResNet18
without residual connections, 0.01 with them; weights initialised as Paddle initialises the
lab's layers (`weight_init="lab"`, see cnnlab.train.init). Part 2 of the lab (CIFAR-10) trains
its ResNet18 with Adam, lr 0.001, weight decay 0.005: those are `resnet18-cifar`'s defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from cnnlab.errors import UserError

# model -> defaults that differ from TrainConfig's field defaults
LAB_DEFAULTS = {
    "lenet": {"lr": 0.1},
    "lenet-native": {"lr": 0.1},
    "resnet18-plain": {"lr": 0.005},
    "resnet18": {"lr": 0.01},
    "resnet18-cifar": {"lr": 0.001, "optimizer": "adam", "weight_decay": 0.005},
}
OPTIMIZERS = ("sgd", "adam")
DIST_TIMEOUT_S = 300  # data-parallel: a wait for the other processes longer than this fails
LOADERS = ("tensor", "torch")
# a word of a field's annotation -> the Python types it accepts (a bool is no int or float here)
_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                     "dict": (dict,), "None": (type(None),)}


@dataclass
class TrainConfig:
    """One training run. `None` means "the lab's default for this model" (see LAB_DEFAULTS).

    out: the run directory (default runs/<model>); loader: "tensor" batches by indexing the
    cached tensors, "torch" uses torch.utils.data.DataLoader with `num_workers` (same batches).
    """

    model: str
    data: str = "bundled"
    split: str = "lab"
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    seed: int = 100
    log_steps: int = 15
    eval_steps: int = 15
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
    weight_init: str = "lab"        # "lab": Paddle's default initialisation (train/init.py); "torch"
    threads: int | None = None      # torch CPU threads for this run (None: torch's default)

    def resolved(self) -> "TrainConfig":
        """A copy with every `None` replaced by the lab's default for `model`, validated."""
        from cnnlab.models import MODEL_NAMES

        if self.model not in MODEL_NAMES:
            raise UserError(f"unknown model {self.model!r}; known models: {', '.join(MODEL_NAMES)}")
        lab = {"lr": 0.01, "optimizer": "sgd", "weight_decay": 0.0, **LAB_DEFAULTS.get(self.model, {})}
        cfg = dataclasses.replace(self, model_kwargs=dict(self.model_kwargs))
        for name, value in lab.items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        if cfg.out is None:
            cfg.out = f"runs/{cfg.model}"
        cfg.validate()
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
        ]
        for ok, name, expected in checks:
            if not ok:
                raise UserError(f"{name} must be {expected}, got {getattr(self, name)!r}")

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
