"""Speed of our operators vs torch's: the layer shapes of the lab's models, timed fairly.

Every figure is a ratio from one run of interleaved repetitions (A, B, B, A, A, B, ...), so load
from other processes hits both sides alike; the reported ratio is the median of the per-pair
ratios, the times are medians too. Forward + backward (gradients of x, weight and bias; with
`dx_first=False` no dx for a model's first layer, as in training), float32.
Used by `benchmarks/ops.py`, `benchmarks/models.py`, the report and
`cnnlab.analysis.tuned` (the autotuner's figures).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import statistics
import time
from dataclasses import dataclass

import torch

from cnnlab import ops
from cnnlab.ops import autotune, fast_conv
from cnnlab.runinfo import cpu_model


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer: x [B,D,H,H] * w [P,D,k,k], stride s, padding p; `where` it occurs."""

    d: int
    p: int
    k: int
    s: int
    pad: int
    h: int
    bias: bool
    where: str
    first: bool = False   # the first layer of every model it occurs in: training needs no dx

    def label(self) -> str:
        return f"{self.d:>3}->{self.p:<3} {self.k}x{self.k}/{self.s} p{self.pad} @{self.h}x{self.h}"


@dataclass(frozen=True)
class PoolShape:
    c: int
    h: int
    k: int
    s: int
    pad: int
    mode: str
    where: str

    def label(self) -> str:
        return f"{self.mode} {self.c}ch {self.k}x{self.k}/{self.s} p{self.pad} @{self.h}x{self.h}"


def _resnet_convs(name, c_in, h, stem):
    """Conv layers of a ResNet18 (2 BasicBlocks a stage, 1x1/2 shortcut where the shape changes)."""
    if stem == "lab":        # 7x7/2 stem with bias, then the 3x3/2 max-pool
        out = [(c_in, 64, 7, 2, 3, h, True, f"{name} conv1")]
        h = (h + 6 - 7) // 2 + 1
        h = (h + 2 - 3) // 2 + 1
    else:                    # CIFAR: 3x3 stride-1 stem, no max-pool
        out = [(c_in, 64, 3, 1, 1, h, False, f"{name} conv1")]
    c = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        s = 1 if stage == 1 else 2
        layer = f"{name} layer{stage}"
        out.append((c, width, 3, s, 1, h, False, f"{layer}.0.conv1"))
        if s != 1 or c != width:
            out.append((c, width, 1, s, 0, h, False, f"{layer}.0.downsample"))
        h = (h + 2 - 3) // s + 1
        out.append((width, width, 3, 1, 1, h, False, f"{layer} 3x3"))
        c = width
    return out


def conv_shapes() -> list[ConvShape]:
    """Every distinct conv shape of LeNet, ResNet18 (lab: 1x32x32) and ResNet18 (CIFAR: 3x32x32)."""
    layers = [(1, 6, 5, 1, 0, 32, True, "lenet conv1"), (6, 16, 5, 1, 0, 14, True, "lenet conv3"),
              (16, 120, 5, 1, 0, 5, True, "lenet conv5")]
    layers += _resnet_convs("resnet18", 1, 32, "lab")
    layers += _resnet_convs("resnet18-cifar", 3, 32, "cifar")
    seen = {}
    for *key, bias, where in layers:
        key = tuple(key) + (bias,)
        seen.setdefault(key, []).append(where)
    # Each model's first conv is listed first and named "<model> conv1".
    return [ConvShape(*key, where=", ".join(w), first=all(n.endswith(" conv1") for n in w))
            for key, w in seen.items()]


def pool_shapes() -> list[PoolShape]:
    """The pooling layers of the models, each timed as max and as average pooling."""
    layers = [(6, 28, 2, 2, 0, "lenet pool2"), (16, 10, 2, 2, 0, "lenet pool4"),
              (64, 16, 3, 2, 1, "resnet18 max-pool")]
    return [PoolShape(c, h, k, s, p, mode, where) for c, h, k, s, p, where in layers
            for mode in ("max", "avg")]


# ------------------------------------------------------------------------------ timing

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# "wall": elapsed time (what a user waits; on a machine shared with other processes it includes
# their load). "cpu": CPU time of this thread, which other processes cannot inflate; it measures
# the work only when torch runs on this one thread (torch.set_num_threads(1)).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = CLOCKS["wall"]


def set_clock(name: str) -> None:
    """Time with the "wall" (default) or "cpu" clock; "cpu" also sets torch to one thread.
    The autotuner times its candidates with the same clock."""
    global _clock
    _clock = CLOCKS[name]
    if name == "cpu":
        torch.set_num_threads(1)
    autotune.set_timer(None if name == "wall" else _cpu_timer)


def _cpu_timer(_name, run):
    t0 = time.thread_time()
    run()
    return time.thread_time() - t0


def _time(fn, device):
    _sync(device)
    t0 = _clock()
    fn()
    _sync(device)
    return _clock() - t0


def rotated(fns: dict, device, reps=5, warmup=1, budget_s=None) -> list[dict]:
    """Rounds of one timed call of every fn, the order rotated each round (A,B,C then B,C,A ...)
    so drift and load hit all alike: [{name: seconds}, ...]. Stops early after `budget_s` seconds
    once 3 rounds are in."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    rounds, start = [], time.perf_counter()
    for r in range(reps):
        k = r % len(names)
        rounds.append({n: _time(fns[n], device) for n in names[k:] + names[:k]})
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return rounds


def median_of(rounds, name, over=None) -> float:
    """Median time of `name` over the rounds, or the median per-round ratio name / over."""
    return statistics.median(r[name] / (r[over] if over else 1.0) for r in rounds)


def interleaved(fn_a, fn_b, device, reps=5, warmup=1, budget_s=None):
    """Median times (s) of fn_a and fn_b and the median of per-pair ratios b/a (A,B then B,A)."""
    rounds = rotated({"a": fn_a, "b": fn_b}, device, reps, warmup, budget_s)
    return median_of(rounds, "a"), median_of(rounds, "b"), median_of(rounds, "b", "a")


def conv_step(shape: ConvShape, impl: str, batch: int, device, dtype=torch.float32, seed=0,
              dx_first=True, tuner=None):
    """A closure running conv2d forward + backward (grads of x, weight, bias; no dx for a first
    layer unless dx_first) on fixed tensors; `tuner`: the autotune mode to run under (None: the
    mode in force)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, shape.d, shape.h, shape.h, generator=gen, dtype=dtype)
    w = torch.randn(shape.p, shape.d, shape.k, shape.k, generator=gen, dtype=dtype)
    w /= math.sqrt(shape.d * shape.k * shape.k)
    b = torch.randn(shape.p, generator=gen, dtype=dtype) if shape.bias else None
    x, w, b = (None if t is None else t.to(device).requires_grad_() for t in (x, w, b))
    x.requires_grad_(dx_first or not shape.first)
    ho = (shape.h + 2 * shape.pad - shape.k) // shape.s + 1
    grad = torch.randn(batch, shape.p, ho, ho, generator=gen, dtype=dtype).to(device)
    leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
    mode = contextlib.nullcontext if tuner is None else functools.partial(autotune.using, tuner)

    def step():
        for t in leaves:
            t.grad = None
        with mode():
            ops.conv2d(x, w, b, shape.s, shape.pad, impl=impl).backward(grad)
    return step


def pool_step(shape: PoolShape, impl: str, batch: int, device, dtype=torch.float32, seed=0,
              tuner=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, shape.c, shape.h, shape.h, generator=gen, dtype=dtype)
    x = x.to(device).requires_grad_()
    ho = (shape.h + 2 * shape.pad - shape.k) // shape.s + 1
    grad = torch.randn(batch, shape.c, ho, ho, generator=gen, dtype=dtype).to(device)
    mode = contextlib.nullcontext if tuner is None else functools.partial(autotune.using, tuner)

    def step():
        x.grad = None
        with mode():
            ops.pool2d(x, shape.k, shape.s, shape.pad, shape.mode, impl=impl).backward(grad)
    return step


def conv_key(shape: ConvShape, batch: int, dx_first=True) -> str:
    """The autotuner's key of conv_step's call (meta tensors: shapes only, no data)."""
    def meta(*size, grad=True):
        return torch.empty(size, device="meta", requires_grad=grad)
    x = meta(batch, shape.d, shape.h, shape.h, grad=dx_first or not shape.first)
    w, b = meta(shape.p, shape.d, shape.k, shape.k), meta(shape.p) if shape.bias else None
    return autotune.conv_key(x, w, b, shape.s, shape.pad)


def algorithm(shape: ConvShape, batch: int, dx_first=True) -> str:
    """The algorithm fast conv2d used for this shape: the autotuner's decision once the shape
    has run in this process, else what the rules pick."""
    used = autotune.decisions().get(conv_key(shape, batch, dx_first))
    if used:
        return used["algorithm"]
    xs, ws = (batch, shape.d, shape.h, shape.h), (shape.p, shape.d, shape.k, shape.k)
    geo = fast_conv.geometry(xs, ws, (shape.s, shape.s), (shape.pad, shape.pad))
    return fast_conv.choose_algorithm(xs, ws, geo, x_channels_last=False)


def summarize(rows) -> dict:
    ratios = [r["ratio"] for r in rows]
    return {"rows": rows, "geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
            "worst": max(ratios), "best": min(ratios)}


def measure(batch=64, device="cpu", impl="fast", reps=5, quick=False, shapes=None,
            dx_first=True) -> dict:
    """Conv forward+backward, `impl` vs native, on every model shape: rows + geomean + worst.

    Each row: shape, where, native_ms, <impl>_ms (as "fast_ms"), ratio (impl / native), algorithm.
    """
    device = torch.device(device)
    rows = []
    for shape in shapes or conv_shapes():
        native = conv_step(shape, "native", batch, device, dx_first=dx_first)
        ours = conv_step(shape, impl, batch, device, dx_first=dx_first)
        t_native, t_ours, ratio = interleaved(native, ours, device, reps=3 if quick else reps,
                                              budget_s=2.0 if quick else 8.0)
        rows.append({"shape": shape.label(), "where": shape.where, "native_ms": 1e3 * t_native,
                     "fast_ms": 1e3 * t_ours, "ratio": ratio,
                     "algorithm": algorithm(shape, batch, dx_first) if impl == "fast"
                     else impl})
    return summarize(rows)


def measure_pool(batch=64, device="cpu", impl="fast", reps=7, quick=False) -> dict:
    device = torch.device(device)
    rows = []
    for shape in pool_shapes():
        native = pool_step(shape, "native", batch, device)
        ours = pool_step(shape, impl, batch, device)
        t_native, t_ours, ratio = interleaved(native, ours, device, reps=3 if quick else reps,
                                              budget_s=2.0 if quick else 5.0)
        rows.append({"shape": shape.label(), "where": shape.where, "native_ms": 1e3 * t_native,
                     "fast_ms": 1e3 * t_ours, "ratio": ratio,
                     "algorithm": "taps" if shape.mode == "max" else
                     "views+tiles" if shape.k == shape.s and shape.pad == 0 else "views"})
    return summarize(rows)


def measure_reference(batch=8, device="cpu") -> dict:
    """The lab's loops vs native on LeNet's layers: one timed repetition each (they are slow)."""
    convs = [s for s in conv_shapes() if s.where.startswith("lenet")]
    pools = [p for p in pool_shapes() if p.where.startswith("lenet")
             and p.mode == ("max" if p.where.endswith("pool2") else "avg")]
    device = torch.device(device)
    rows = []
    for shape, make in [(s, conv_step) for s in convs] + [(p, pool_step) for p in pools]:
        native, ref = make(shape, "native", batch, device), make(shape, "reference", batch, device)
        native()                          # warm up the native kernels only (the loops are slow)
        t_native, t_ref, ratio = interleaved(native, ref, device, reps=1, warmup=0)
        rows.append({"shape": shape.label(), "where": shape.where, "native_ms": 1e3 * t_native,
                     "fast_ms": 1e3 * t_ref, "ratio": ratio, "algorithm": "reference loops"})
    return summarize(rows)


# ------------------------------------------------------------------------------ whole models

# (label, fast model, native model, kwargs of the fast one); same parameter names in each pair.
MODEL_PAIRS = [
    ("lenet", "lenet", "lenet-native", {"conv_impl": "fast"}),
    ("resnet18", "resnet18", "resnet18", {"conv_impl": "fast"}),
    ("resnet18-cifar", "resnet18-cifar", "resnet18-cifar", {"conv_impl": "fast"}),
]


def train_step(model, batch, device, lr=0.01, seed=0):
    """A closure doing one SGD training step (forward, cross-entropy, backward, update)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, _in_channels(model), 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def _in_channels(model):
    """Input channels of a model: those of its first 4-D weight (the first convolution)."""
    first = next(m for m in model.modules() if hasattr(m, "weight") and m.weight is not None
                 and m.weight.dim() == 4)
    return first.weight.shape[1]


def measure_models(batch=64, device="cpu", reps=5, quick=False, names=None) -> dict:
    """Training step of each model on fast operators vs the same model on torch's layers.

    Rows: model, native_ms, fast_ms, ratio (fast / native); same initial weights in both.
    """
    from cnnlab.models import build_model

    device = torch.device(device)
    rows = []
    for label, fast_name, native_name, kwargs in MODEL_PAIRS:
        if names and label not in names:
            continue
        torch.manual_seed(0)
        fast = build_model(fast_name, **kwargs).to(device)
        native = build_model(native_name).to(device)
        native.load_state_dict(fast.state_dict())
        t_native, t_fast, ratio = interleaved(train_step(native, batch, device),
                                              train_step(fast, batch, device), device,
                                              reps=3 if quick else reps,
                                              budget_s=5.0 if quick else 30.0)
        rows.append({"shape": label, "where": f"{fast_name} {kwargs} vs {native_name}",
                     "native_ms": 1e3 * t_native, "fast_ms": 1e3 * t_fast, "ratio": ratio,
                     "algorithm": "train step"})
    return summarize(rows)


# ------------------------------------------------------------------------------ report

def environment(device="cpu") -> dict:
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    clock = next(k for k, v in CLOCKS.items() if v is _clock)
    return {"torch": torch.__version__, "device": str(dev), "device_name": name,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "clock": clock,
            "autotune": autotune.mode(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def format_table(title, table, impl_name="fast") -> str:
    lines = [title,
             f"{'shape':<30} {'native ms':>10} {impl_name + ' ms':>12} {'ratio':>7}  "
             f"{'algorithm':<16} where"]
    for r in table["rows"]:
        lines.append(f"{r['shape']:<30} {r['native_ms']:>10.2f} {r['fast_ms']:>12.2f} "
                     f"{r['ratio']:>7.2f}  {r['algorithm']:<16} {r['where']}")
    lines.append(f"geometric mean {table['geomean']:.2f}, worst {table['worst']:.2f}, "
                 f"best {table['best']:.2f} over {len(table['rows'])} shapes")
    return "\n".join(lines)
