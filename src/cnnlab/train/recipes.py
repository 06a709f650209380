"""The two CIFAR-10 recipes of part 2 (`--recipe lab|fast`), and what a recipe adds to a Runner.

`lab`: the course notebook exactly (reference.md, "Part 2"): paddle.vision's resnet18
(`resnet18-vision`, Paddle's default initialisation), Adam lr 1e-3 with L2 weight decay 5e-3,
batch 64, 30 epochs, log and evaluate every 3,000 steps, seed 100, pixels /255 then the
notebook's mean/std, no augmentation, float32. The notebook printed best dev 0.7272, test
0.7234 / loss 0.8324.

`fast`: ResNet18 with the CIFAR stem (`resnet18-cifar`, torchvision's initialisation) and what the
fastest CIFAR-10 trainers share (airbench, David Page's DAWNBench ResNet, hlb-CIFAR10):
- random 32x32 crops of the image reflect-padded by 4, and horizontal flips, on the device
  (`cnnlab.train.batches`); the true per-channel std (0.2470, 0.2435, 0.2616);
- SGD with Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.2;
- a one-cycle schedule stepped every batch: linear warm-up from lr/10 to the peak lr 0.2 over the
  first 25 % of the steps, then linear decay to lr/10,000 (`OneCycle`; momentum not cycled);
- batch 512, 20 epochs (1,580 steps on the lab split's 40,000 training images);
- bf16 autocast and channels-last on CUDA (float32 and the default layout on a CPU, where both
  are slower), `--compile` on request; flip test-time augmentation at every evaluation.
The settings were chosen from the anchors (kuangliu/pytorch-cifar's ResNet18: SGD 0.1 at batch
128, wd 5e-4, 93.02 % in 200 epochs; Lightning's OneCycle ResNet18: max lr 0.1 at batch 256,
92-93 % in 20-30 epochs, scaled here to batch 512; airbench's label smoothing 0.2, flip TTA and
warm-up) aiming at >= 94 % test accuracy in 20 epochs. UNMEASURED: no GPU and no real CIFAR-10
were available when they were chosen. The best model is chosen on the dev set (data_batch_5),
never on the test set; the anchors train on all 50,000 images, the lab split on 40,000.

Every setting a recipe makes is a `TrainConfig` field; a value the user gives wins.
"""

from __future__ import annotations

import functools

# No torch at import: `cnnlab train --help` reads RECIPES through TrainConfig.
RECIPES = {
    "lab": {
        "model": "resnet18-vision", "optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-3,
        "momentum": 0.0, "nesterov": False, "batch_size": 64, "epochs": 30, "log_steps": 3000,
        "eval_steps": 3000, "seed": 100, "normalize": "lab", "augment": "none",
        "label_smoothing": 0.0, "schedule": "constant", "warmup": 0.0, "amp": "off",
        "channels_last": False, "tta": False, "weight_init": "lab",
    },
    "fast": {
        "model": "resnet18-cifar", "optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4,
        "momentum": 0.9, "nesterov": True, "batch_size": 512, "epochs": 20, "log_steps": 100,
        "eval_steps": 400, "seed": 100, "normalize": "channel", "augment": "crop-flip",
        "label_smoothing": 0.2, "schedule": "onecycle", "warmup": 0.25, "amp": "auto",
        "channels_last": "auto", "tta": True, "weight_init": "torch",
    },
}
RECIPE_NAMES = tuple(RECIPES)
# "lab": the notebook's mean/std (its std averages per-image stds); "channel": the true
# per-channel std of the training images (cnnlab.data.cifar10's constants)
NORMALIZATIONS = ("lab", "channel")
SCHEDULES = ("constant", "onecycle")
# One-cycle: the lr starts at peak * START, ends at peak * END.
START, END = 0.1, 1e-4
# What the fast recipe's "auto" resolves to on a GPU (a CPU gets float32, default layout).
GPU_DEFAULTS = {"amp": "bf16", "channels_last": True}


def resolve_auto(cfg) -> None:
    """Replace "auto" in cfg.amp / cfg.channels_last by what the run's device takes."""
    if "auto" not in (cfg.amp, cfg.channels_last):
        return
    from cnnlab.train.device import resolve_device

    import torch

    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    if cfg.amp == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
        cfg.amp = ("bf16" if bf16 else "fp16") if cuda else "off"
    if cfg.channels_last == "auto":
        cfg.channels_last = cuda


class OneCycle:
    """The one-cycle lr multiplier of step s (0 .. total_steps - 1): linear from START at step 0
    to 1 at the end of the warm-up (a `warmup` fraction of the steps), then linear to END at the
    last step (airbench's np.interp schedule). A `torch.optim.lr_scheduler.LambdaLR` steps it
    every batch; torch's own OneCycleLR divides by zero on runs of a few steps (--subset)."""

    def __init__(self, total_steps: int, warmup: float):
        self.total_steps = int(total_steps)
        self.peak_step = round(warmup * (self.total_steps - 1))

    def __call__(self, step: int) -> float:
        if step < self.peak_step:
            return START + (1 - START) * step / self.peak_step
        span = self.total_steps - 1 - self.peak_step
        return 1 + (END - 1) * min(step - self.peak_step, span) / span if span > 0 else 1.0


def make_scheduler(cfg, optimizer, steps_per_epoch: int):
    """-> (scheduler or None, stepped per batch?) for cfg.schedule."""
    import torch

    if cfg.schedule == "constant":
        return None, False
    schedule = OneCycle(cfg.epochs * steps_per_epoch, cfg.warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), True


def configure_runner(runner, cfg, images, steps_per_epoch: int) -> None:
    """Give `runner` what cfg asks beyond the lab's part 1: the batch transform (uint8 images
    normalised and augmented on the device; channels-last), mixed precision, the per-batch
    schedule, label smoothing (training loss only: dev and test losses stay plain
    cross-entropy, comparable with the notebook's) and flip TTA at evaluation.

    images: a training images tensor (its dtype says whether it needs normalising). Nothing
    is set for a part-1 run (float MNIST images, no augmentation, float32, constant lr)."""
    import torch
    import torch.nn.functional as F

    from cnnlab.train.amp import Precision
    from cnnlab.train.batches import BatchTransform

    needs_scaling = images.dtype == torch.uint8
    if needs_scaling or cfg.augment != "none" or cfg.channels_last:
        mean, std = normalization(cfg.normalize) if needs_scaling else (None, None)
        runner.batch_transform = BatchTransform(mean, std, cfg.augment, cfg.seed,
                                                cfg.channels_last, runner.device)
    if cfg.channels_last:
        runner.model.to(memory_format=torch.channels_last)
    runner.precision = Precision(cfg.amp, runner.device)
    if runner.device.type == "cuda" and not cfg.deterministic and needs_scaling:
        # cuDNN times its convolution algorithms once per shape and keeps the fastest
        torch.backends.cudnn.benchmark = True
    if cfg.label_smoothing:
        runner.eval_loss_fn = runner.loss_fn
        runner.loss_fn = functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing)
    runner.tta = cfg.tta
    runner.scheduler, runner.scheduler_per_step = make_scheduler(cfg, runner.optimizer,
                                                                 steps_per_epoch)
    if cfg.compile:
        runner.model.compile()  # compiles forward in place; state_dict keys stay the same


def configure_evaluation(runner, config: dict, images, tta: bool | None = None) -> None:
    """A Runner that evaluates or predicts as the run that wrote `config` (a checkpoint's config;
    {} for a Paddle file: the notebook's normalisation) evaluated: uint8 images normalised on
    the device, flip TTA if the run used it (`tta` overrides), its mixed precision on CUDA (a
    CPU evaluates in float32)."""
    import torch

    from cnnlab.train.amp import Precision
    from cnnlab.train.batches import BatchTransform

    if images.dtype == torch.uint8:
        mean, std = normalization(config.get("normalize") or "lab")
        runner.batch_transform = BatchTransform(mean, std, device=runner.device)
    runner.tta = bool(config.get("tta")) if tta is None else tta
    amp = config.get("amp") or "off"
    on_gpu = runner.device.type == "cuda" and amp in ("bf16", "fp16")
    runner.precision = Precision(amp if on_gpu else "off", runner.device)


def normalization(name: str) -> tuple[tuple, tuple]:
    """"lab" | "channel" -> (mean, std) per channel of the pixels scaled to 0..1."""
    from cnnlab.data.cifar10 import CIFAR10_LAB_STD, CIFAR10_MEAN, CIFAR10_STD

    return {"lab": (CIFAR10_MEAN, CIFAR10_LAB_STD), "channel": (CIFAR10_MEAN, CIFAR10_STD)}[name]

