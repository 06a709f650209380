"""The CIFAR-10 recipes' settings and the pieces they add to training, without training a model:
resolved settings and overrides, --subset, normalisation values, crop/flip augmentation,
label smoothing, the one-cycle schedule, flip TTA and mixed precision.

References are independent of cnnlab: the notebook's numbers typed from reference.md, float64
hand computations, torch.nn.functional.pad(mode="reflect"), torchvision's Normalize.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T

from cnnlab.cli import build_parser
from cnnlab.cli.train import config_from_args
from cnnlab.data import subset
from cnnlab.data.synthetic import make_images
from cnnlab.errors import UserError
from cnnlab.train.amp import Precision
from cnnlab.train.batches import BatchTransform, augment_seed, crop_flip, flip_tta
from cnnlab.train.config import TrainConfig
from cnnlab.train.recipes import OneCycle, make_scheduler

CIFAR = "cifar10:/nowhere"  # resolving a config reads no file


def resolved(**kw):
    return TrainConfig(**{"data": CIFAR, **kw}).resolved()


def cli_config(*argv):
    args = build_parser().parse_args(["train", *argv])
    return config_from_args(args).resolved()


# ------------------------------------------------------------------------------ recipes
def test_lab_recipe_is_the_notebook():
    cfg = resolved(recipe="lab")
    expected = {"model": "resnet18-vision", "optimizer": "adam", "lr": 0.001, "weight_decay": 0.005,
                "batch_size": 64, "epochs": 30, "log_steps": 3000, "eval_steps": 3000, "seed": 100,
                "normalize": "lab", "augment": "none", "weight_init": "lab", "amp": "off",
                "channels_last": False, "tta": False, "label_smoothing": 0.0,
                "schedule": "constant", "recipe": "lab"}
    assert {k: getattr(cfg, k) for k in expected} == expected
    # CIFAR-10 data without a recipe is the lab's; so is `cnnlab train --data cifar10:...`
    assert resolved() == cfg
    assert cli_config("--data", CIFAR, "--out", "o").to_dict() == \
        {**cfg.to_dict(), "out": "o", "loader": "tensor"}


def test_fast_recipe_on_cpu_and_on_a_gpu(monkeypatch):
    cfg = resolved(recipe="fast", device="cpu")
    expected = {"model": "resnet18-cifar", "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
                "nesterov": True, "weight_decay": 5e-4, "batch_size": 512, "epochs": 20,
                "label_smoothing": 0.2, "schedule": "onecycle", "augment": "crop-flip",
                "normalize": "channel", "tta": True, "weight_init": "torch",
                "amp": "off", "channels_last": False}  # a CPU: float32, default layout
    assert {k: getattr(cfg, k) for k in expected} == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    gpu = resolved(recipe="fast")  # device auto -> cuda
    assert (gpu.amp, gpu.channels_last, gpu.device) == ("bf16", True, "auto")


def test_every_recipe_setting_can_be_overridden():
    cfg = cli_config("resnet18-vision", "--recipe", "fast", "--data", CIFAR, "--device", "cpu",
                     "--lr", "0.05", "--batch-size", "128", "--epochs", "3", "--seed", "7",
                     "--augment", "none", "--no-tta", "--amp", "bf16", "--label-smoothing", "0",
                     "--schedule", "constant", "--momentum", "0.5", "--no-nesterov",
                     "--normalize", "lab", "--weight-init", "lab", "--eval-steps", "9",
                     "--subset", "100", "--ops", "fast", "--channels-last")
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.epochs, cfg.seed, cfg.augment, cfg.tta,
            cfg.amp, cfg.label_smoothing, cfg.schedule, cfg.momentum, cfg.nesterov,
            cfg.normalize, cfg.weight_init, cfg.eval_steps, cfg.subset, cfg.channels_last) == \
        ("resnet18-vision", 0.05, 128, 3, 7, "none", False, "bf16", 0.0, "constant", 0.5,
         False, "lab", "lab", 9, 100, True)
    assert cfg.model_kwargs == {"conv_impl": "fast"} and cfg.recipe == "fast"
    assert cfg.optimizer == "sgd" and cfg.weight_decay == 5e-4  # not overridden: the recipe's


def test_part1_settings_are_unchanged():
    cfg = TrainConfig(model="lenet").resolved()
    assert (cfg.recipe, cfg.epochs, cfg.batch_size, cfg.lr, cfg.optimizer, cfg.seed,
            cfg.log_steps, cfg.eval_steps, cfg.momentum, cfg.augment, cfg.amp, cfg.tta,
            cfg.normalize, cfg.weight_init, cfg.schedule) == \
        (None, 5, 64, 0.1, "sgd", 100, 15, 15, 0.0, "none", "off", False, None, "lab", "constant")


@pytest.mark.parametrize("kw, words", [
    ({"recipe": "fast", "data": "bundled"}, ["recipe 'fast' trains on CIFAR-10", "cifar10:PATH"]),
    ({"recipe": "nosuch"}, ["unknown recipe 'nosuch'", "lab or fast"]),
    ({"model": None, "data": "bundled"}, ["no model given"]),
    ({"subset": 0}, ["subset must be an integer >= 1"]),
    ({"normalize": "lab", "data": "bundled", "model": "lenet"}, ["applies to CIFAR-10"]),
    ({"recipe": "lab", "nesterov": True}, ["nesterov needs the sgd optimizer"]),
    ({"recipe": "fast", "label_smoothing": 1.0}, ["label_smoothing must be a number in [0, 1)"]),
])
def test_bad_settings_are_one_line_user_errors(kw, words):
    with pytest.raises(UserError) as err:
        TrainConfig(**{"data": CIFAR, **kw}).resolved()
    assert all(w in str(err.value) for w in words), str(err.value)


# ------------------------------------------------------------------------------- subset
def test_subset_takes_the_first_n_images_of_each_part():
    from cnnlab.data import load_mnist

    data = load_mnist("bundled", "lab")
    small = subset(data, 30)
    assert (len(small.train), len(small.dev), len(small.test)) == (30, 30, 30)
    assert torch.equal(small.test.images, data.test.images[:30])
    assert torch.equal(small.train.labels, data.train.labels[:30])
    assert len(subset(data, 5000).dev) == 200  # a part smaller than N is kept whole
    with pytest.raises(UserError, match="--subset must be an integer >= 1"):
        subset(data, 0)


# ------------------------------------------------------------------------ normalisation
def test_normalisation_values_by_hand_and_as_torchvision():
    x = torch.from_numpy(make_images(16, seed=3)[0].reshape(16, 3, 32, 32))
    lab = BatchTransform((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))(x)
    true = BatchTransform((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))(x)
    # a pixel of 0 and one of 255 in the red channel, by hand: (v/255 - 0.4914) / std
    corner = torch.tensor([[0, 255]], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    lab_corner = BatchTransform((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))(corner)
    assert lab_corner[0, 0, 0].tolist() == pytest.approx([-2.429065, 2.514088], abs=1e-5)
    true_corner = BatchTransform((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))(corner)
    assert true_corner[0, 2, 0].tolist() == pytest.approx([-1.706804, 2.115826], abs=1e-5)
    # the whole batch against float64 and against torchvision's ToTensor + Normalize
    x64 = x.double() / 255
    for out, std in ((lab, (0.2023, 0.1994, 0.2010)), (true, (0.2470, 0.2435, 0.2616))):
        mean = torch.tensor((0.4914, 0.4822, 0.4465), dtype=torch.float64).view(1, 3, 1, 1)
        ref = (x64 - mean) / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
        assert out.dtype == torch.float32 and (out.double() - ref).abs().max() < 1e-5
        tv = T.Normalize((0.4914, 0.4822, 0.4465), std)(T.ToDtype(torch.float32, scale=True)(x))
        assert torch.allclose(out, tv, atol=1e-6)


# ------------------------------------------------------------------------- augmentation
def _reference_crop_flip(x, offsets, flip, pad=4):
    padded = F.pad(x.double(), (pad,) * 4, mode="reflect")
    out = []
    for b in range(x.shape[0]):
        dy, dx = int(offsets[0, b]), int(offsets[1, b])
        crop = padded[b, :, dy:dy + 32, dx:dx + 32]
        out.append(crop.flip(-1) if flip[b] else crop)
    return torch.stack(out)


def test_crop_flip_equals_reflect_padding_then_crop_then_flip():
    x = torch.from_numpy(make_images(64, seed=5)[0].reshape(64, 3, 32, 32))
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 9, (2, 64), generator=g)
    offsets[:, :4] = torch.tensor([[0, 8, 0, 8], [0, 8, 8, 0]])  # every corner, both borders
    flip = torch.randint(0, 2, (64,), generator=g)
    out = crop_flip(x, offsets, flip)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out.double(), _reference_crop_flip(x, offsets, flip))


def test_training_batches_are_cropped_flipped_and_seeded_evaluation_batches_are_not():
    x = torch.from_numpy(make_images(64, seed=6)[0].reshape(64, 3, 32, 32))
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    t = BatchTransform(mean, std, augment="crop-flip", seed=100)
    plain = BatchTransform(mean, std)(x)
    out = t(x, train=True)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    # the documented draws, from a generator seeded as the docstring says
    g = torch.Generator().manual_seed(augment_seed(100))
    offsets = torch.randint(0, 9, (2, 64), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g)
    ref = BatchTransform(mean, std)(_reference_crop_flip(x, offsets, flip).to(torch.uint8))
    assert torch.equal(out, ref)
    assert 16 < int(flip.sum()) < 48 and (offsets != 4).any(dim=0).sum() > 48  # they happen
    changed = (out != plain).flatten(1).any(dim=1)
    assert changed.sum() > 48
    # seeded: the same seed draws the same batch, the next batch differs, another seed differs
    assert torch.equal(BatchTransform(mean, std, "crop-flip", seed=100)(x, train=True), out)
    assert not torch.equal(t(x, train=True), out)
    assert not torch.equal(BatchTransform(mean, std, "crop-flip", seed=101)(x, train=True), out)
    # evaluation: normalisation only, no draw
    state = t.get_state()
    assert torch.equal(t(x, train=False), plain) and torch.equal(t.get_state(), state)
    assert BatchTransform(mean, std, channels_last=True)(x).is_contiguous(
        memory_format=torch.channels_last)


# ------------------------------------------------ label smoothing, schedule, TTA, precision
def _runner(model, cfg):
    from cnnlab.train.metric import Accuracy
    from cnnlab.train.recipes import configure_runner
    from cnnlab.train.runner import Runner

    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov)
    runner = Runner(model, opt, F.cross_entropy, Accuracy(), device="cpu", progress=False, log=False)
    configure_runner(runner, cfg, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 10)
    return runner


def test_label_smoothing_of_the_training_loss_only():
    cfg = resolved(recipe="fast", device="cpu", epochs=1)
    runner = _runner(torch.nn.Linear(3, 10), cfg)
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(8) % 10
    logp = logits.log_softmax(dim=1)
    # (1 - eps) * cross-entropy + eps * mean over classes of -log p, eps = 0.2
    by_hand = (0.8 * -logp[torch.arange(8), y] + 0.2 * -logp.mean(dim=1)).mean()
    assert float(runner.loss_fn(logits, y)) == pytest.approx(float(by_hand), rel=1e-12)
    plain = -logp[torch.arange(8), y].mean()
    assert float(runner.eval_loss_fn(logits, y)) == pytest.approx(float(plain), rel=1e-12)
    assert runner.tta is True and runner.scheduler_per_step is True
    assert runner.optimizer.param_groups[0]["lr"] == pytest.approx(0.02)  # one-cycle's start


def test_one_cycle_learning_rate_at_known_steps():
    # 100 steps, warm-up 25 %: peak at step round(0.25 * 99) = 25; from 0.1 x peak, to 1e-4 x
    cycle = OneCycle(100, 0.25)
    assert [cycle(s) for s in (0, 25, 99)] == pytest.approx([0.1, 1.0, 1e-4])
    assert cycle(10) == pytest.approx(0.1 + 0.9 * 10 / 25)
    assert cycle(62) == pytest.approx(1 + (1e-4 - 1) * 37 / 74)
    # stepped once per batch through the Runner: the lr of each step, as the optimizer used it
    cfg = resolved(recipe="fast", device="cpu", epochs=2, lr=0.2, warmup=0.25)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    runner = _runner(model, cfg)  # 10 steps an epoch: 20 steps
    used = []
    runner.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(40) % 10),
                                         batch_size=4)
    runner.train(loader, num_epochs=2, log_steps=0)
    schedule = OneCycle(20, 0.25)
    assert used == pytest.approx([0.2 * schedule(s) for s in range(20)])
    assert used[0] == pytest.approx(0.02) and max(used) == pytest.approx(0.2)
    assert make_scheduler(resolved(recipe="lab"), runner.optimizer, 10) == (None, False)


def test_flip_tta_averages_the_logits_of_both_flips():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).double()
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    out = flip_tta(model, x)
    assert len(seen) == 2 and torch.equal(seen[0], x) and torch.equal(seen[1], x.flip(3))
    assert torch.allclose(out, (model(x) + model(torch.flip(x, dims=[3]))) / 2)
    assert not torch.allclose(out, model(x))  # the mirror image really changes the logits


def test_bf16_autocast_on_cpu_keeps_batchnorm_and_weights_in_float32():
    from cnnlab.models import build_model

    for impl in ("native", "fast"):
        torch.manual_seed(0)
        model = build_model("resnet18-vision", conv_impl=impl)
        precision = Precision("bf16", "cpu")
        dtypes = {}
        model.conv1.register_forward_hook(lambda m, i, o: dtypes.__setitem__("conv", o.dtype))
        model.bn1.register_forward_hook(lambda m, i, o: dtypes.__setitem__("bn_in", i[0].dtype))
        x = torch.randn(4, 3, 32, 32)
        with precision.autocast():
            loss = F.cross_entropy(model(x), torch.arange(4))
        assert dtypes == {"conv": torch.bfloat16, "bn_in": torch.bfloat16}, impl
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        precision.backward(loss)
        assert model.conv1.weight.grad.dtype == torch.float32
        assert model.bn1.weight.dtype == model.bn1.running_mean.dtype == torch.float32
        assert precision.state_dict() is None  # no loss scaling in bf16
    assert Precision("fp16", "cpu").state_dict()["scale"] > 1  # fp16: a GradScaler


def test_fast_ops_are_device_agnostic():
    """Both CIFAR models on cnnlab's operators, forward and backward on the "meta" device: a
    tensor made on the CPU inside the operators would meet a meta tensor and raise."""
    from cnnlab.models import build_model

    for name in ("resnet18-vision", "resnet18-cifar"):
        for layout in (torch.contiguous_format, torch.channels_last):
            model = build_model(name, conv_impl="fast").to("meta").to(memory_format=layout)
            x = torch.empty(4, 3, 32, 32, device="meta").contiguous(memory_format=layout)
            model(x).sum().backward()
            assert model.conv1.weight.grad.device.type == "meta"



def test_a_long_run_prints_its_estimated_time_first(monkeypatch):
    from cnnlab.train import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])

    def run(estimate, seconds_per_step):
        for step in range(30):
            now[0] = seconds_per_step * step   # the clock at the end of `step`
            estimate.after_step()

    lines = []
    run(progress.TimeEstimate(1000, 64, 20_000, torch.device("cpu"), lines.append), 0.5)
    # step 0 is warm-up; steps 1-10 timed (5 s): 0.5 s a step; 1000 x 0.5 s for the steps and
    # 20,000 evaluated images at a third of 0.5 / 64 s each: 552 s
    assert len(lines) == 1 and "about 9.2 min on cpu" in lines[0], lines
    assert "(1,000 steps at 0.5 s, 128 img/s" in lines[0] and "--subset N" in lines[0]
    short = []
    run(progress.TimeEstimate(100, 64, 0, torch.device("cpu"), short.append), 0.01)
    assert short == []  # 1 s in all: nothing to say
    slow = []  # a step of 30 s: measured on one step (15 s at most), not ten
    run(progress.TimeEstimate(50, 512, 0, torch.device("cpu"), slow.append), 30.0)
    assert len(slow) == 1 and "(50 steps at 30 s" in slow[0]


def test_the_progress_bar_shows_images_per_second():
    from types import SimpleNamespace

    from cnnlab.train.progress import images_per_second_column

    column = images_per_second_column()
    task = SimpleNamespace(finished_speed=None, speed=2.5, fields={"batch": 512})
    assert column.render(task).plain == "1,280 img/s"
    assert column.render(SimpleNamespace(finished_speed=None, speed=None, fields={})).plain == \
        "– img/s"


def test_compile_compiles_the_models_forward_in_place(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    model = torch.nn.Linear(3, 10)
    _runner(model, resolved(recipe="fast", device="cpu", epochs=1, compile=True))
    assert compiled == [model]


def test_each_recipe_starts_from_its_initialisation(tmp_path):
    """lab: Paddle's defaults (conv weights N(0, 2/fan_in), linear bias 0); fast: torchvision's
    (conv weights N(0, 2/fan_out)): the stems' stds tell them apart."""
    from cnnlab.data.synthetic import write_cifar10
    from cnnlab.train.run import build_run

    write_cifar10(tmp_path, per_batch=10)
    data = f"cifar10:{tmp_path}"
    lab, *_ = build_run(TrainConfig(data=data, recipe="lab", quiet=True).resolved())
    fast, *_ = build_run(TrainConfig(data=data, recipe="fast", device="cpu", quiet=True).resolved())
    lab_std = float(lab.model.conv1.weight.detach().std())    # 7x7, 3 -> 64: fan_in 147
    fast_std = float(fast.model.conv1.weight.detach().std())  # 3x3, 3 -> 64: fan_out 576
    assert lab_std == pytest.approx((2 / 147) ** 0.5, rel=0.1)
    assert fast_std == pytest.approx((2 / 576) ** 0.5, rel=0.1)
    assert torch.equal(lab.model.fc.bias, torch.zeros(10))
    assert lab.model.bn1.weight.eq(1).all() and fast.model.bn1.bias.eq(0).all()
