"""Seeded randomized sweeps of the fast operators against torch at real sizes, default chunking.

Batch 1-160, channels 1-64, kernels 1-7 (rectangular too), strides 1-3, paddings 0-3, NCHW and
channels-last, with and without bias, with and without dx (x requiring grad or not), every
algorithm forced where it applies: outputs and every gradient against torch's F.conv2d /
F.max_pool2d / F.avg_pool2d in float64 on the same values. The chunk budgets are the real ones
(CPU_CHUNK_BYTES, KEEP_COLUMNS_BYTES, BLOCK_ROWS), so whole-batch chunks, several chunks, kept
columns and backward passes chunked differently from the forward all occur. A failure names its
case; rerun it alone with `-k "conv-17-"`.

Run on one thread: the results do not depend on it, and where other processes share the cores a
thread pool waits for descheduled threads (the conv sweep took 55 s on two threads, 3 s on one,
with a load average of ~5 on two cores).
"""

import contextlib
import math
import random
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F

from cnnlab import nn as cnn
from cnnlab import ops
from cnnlab.ops import _conv_common, _conv_dx, _conv_rows, _conv_shift, _conv_unfold, fast_conv

SEED = 14
CONV_SWEEP_CASES = 240
POOL_SWEEP_CASES = 120
MAX_MACS = 32_000_000          # multiply-adds of one forward: keeps each case within ~50 ms
FLOAT64_MACS = 4_000_000       # float64 where affordable: half of the cases at most this big
# Largest |ours - torch's float64| allowed per element, relative to the sum of the magnitudes of
# the terms that element adds up (torch's op on |x|, |w|, |dY|): the rounding error of a sum in
# any order is below n*eps times that, typically eps (float32 6e-8, float64 1e-16); a misplaced
# term among n is 1/n of it, more than RTOL for every size here (n <= 160*32*32).
RTOL = {torch.float32: 4e-6, torch.float64: 1e-13}


@dataclass(frozen=True)
class ConvCase:
    b: int
    d: int
    p: int
    m: int
    n: int
    kernel: tuple
    stride: tuple
    padding: tuple
    channels_last: bool
    bias: bool
    need_x: bool
    need_w: bool
    algo: str | None            # None: the selector's choice
    dtype: torch.dtype
    seed: int

    def __str__(self):
        return (f"x [{self.b},{self.d},{self.m},{self.n}] w [{self.p},{self.d},{self.kernel[0]},"
                f"{self.kernel[1]}] stride {self.stride} padding {self.padding} "
                f"{'channels-last' if self.channels_last else 'NCHW'} "
                f"bias={self.bias} dx={self.need_x} dW={self.need_w} algo={self.algo} "
                f"{str(self.dtype)[6:]} seed={self.seed}")

    def geometry(self):
        return fast_conv.geometry((self.b, self.d, self.m, self.n), (self.p, self.d, *self.kernel),
                                  self.stride, self.padding)

    def macs(self):
        (mo, no) = self.geometry().out
        return self.b * self.p * self.d * self.kernel[0] * self.kernel[1] * mo * no


def _log_int(rng, lo, hi):
    """An integer in lo..hi, uniform in log scale (small and large values both common)."""
    return min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.5))))))


def _channels(rng):
    """1..64, the ends of the range often."""
    return rng.choice([1, 64, *[_log_int(rng, 1, 64)] * 4])


def _pair(rng, lo, hi, square=0.75):
    a = rng.randint(lo, hi)
    return (a, a) if rng.random() < square else (a, rng.randint(lo, hi))


def _random_conv_case(rng, seed):
    b = rng.choice([1, 2, 3, _log_int(rng, 1, 160), _log_int(rng, 16, 160), 64, 128, 160])
    d, p = _channels(rng), _channels(rng)
    kernel, stride, padding = _pair(rng, 1, 7), _pair(rng, 1, 3, 0.85), _pair(rng, 0, 3)
    region = rng.random()
    if region < 0.15:
        # Issue 14's region: a big batch, a big kernel on a small map, stride 1, P in 1.5D..2D:
        # the forward keeps its columns and the flipped-kernel dx often runs in smaller chunks.
        b, d, kernel, stride = rng.randint(120, 160), rng.randint(3, 8), _pair(rng, 5, 7), (1, 1)
        p, padding = rng.randint((3 * d + 1) // 2, 2 * d), _pair(rng, 0, 1, 0.5)
    # Input at least as big as the kernel once padded, up to 32 (4-9 more in issue 14's
    # region); shrunk (then the channels) until one forward is at most MAX_MACS.
    lo = [max(1, k - 2 * pad) for k, pad in zip(kernel, padding)]
    if region < 0.15:
        m, n = (rng.randint(lo[0] + 4, lo[0] + 9), rng.randint(lo[1] + 4, lo[1] + 9))
    elif region < 0.25:         # the smallest input: one window, often the whole padded input
        m, n = lo
    else:
        m, n = (rng.randint(lo[0], max(lo[0], 32)), rng.randint(lo[1], max(lo[1], 32)))
    fields = dict(channels_last=rng.random() < 0.5, bias=rng.random() < 0.5, seed=seed)
    need = rng.choice(["both", "both", "x", "w"])
    fields.update(need_x=need != "w", need_w=need != "x")
    case = ConvCase(b, d, p, m, n, kernel, stride, padding, algo=None, dtype=torch.float32,
                    **fields)
    while case.macs() > MAX_MACS:
        if case.m > lo[0] or case.n > lo[1]:
            case = replace(case, m=max(lo[0], case.m * 3 // 4), n=max(lo[1], case.n * 3 // 4))
        else:
            case = replace(case, d=max(1, case.d // 2), p=max(1, case.p // 2))
    geo = case.geometry()
    x_shape = (case.b, case.d, case.m, case.n)
    algos = [a for a in fast_conv.ALGORITHMS if fast_conv.applies(a, x_shape, geo)]
    algo = rng.choice([None, None, *algos])
    dtype = torch.float64 if case.macs() <= FLOAT64_MACS and rng.random() < 0.5 else torch.float32
    return replace(case, algo=algo, dtype=dtype)


def conv_sweep():
    rng = random.Random(SEED)
    return [_random_conv_case(rng, SEED * 1000 + i) for i in range(CONV_SWEEP_CASES)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def chunk_log(monkeypatch):
    """Every (batch, images per chunk) that a chunked loop of the fast conv ran with, in order."""
    log = []
    real = _conv_common.chunks

    def spy(batch, chunk):
        log.append((batch, chunk))
        return real(batch, chunk)
    for module in (_conv_unfold, _conv_rows, _conv_dx, _conv_shift):
        monkeypatch.setattr(module, "chunks", spy)
    return log


def _close(what, ours, ref, magnitude, rtol, case):
    """|ours - ref| <= rtol * magnitude elementwise (exact where the magnitude is 0), with the
    case and the worst element in the message."""
    assert ours.shape == ref.shape, f"{what}: shape {list(ours.shape)} vs {list(ref.shape)}, {case}"
    ours, ref, magnitude = (t.double().reshape(-1) for t in (ours, ref, magnitude))
    err = (ours - ref).abs()
    worst = int((err - rtol * magnitude).argmax())
    if err[worst] > rtol * magnitude[worst]:
        raise AssertionError(f"{what}: ours {ours[worst]:.9g} vs torch {ref[worst]:.9g} at flat "
                             f"index {worst}, |diff| {err[worst]:.3g} > {rtol:g} x magnitude "
                             f"{magnitude[worst]:.3g}; case {case}")


@contextlib.contextmanager
def naming(case):
    """An error inside (a crash of our op, not only a mismatch) names the case."""
    try:
        yield
    except RuntimeError as e:
        raise AssertionError(f"{type(e).__name__}: {e}; case {case}") from e


def run_conv_case(case, chunk_log=None):
    """Our conv (fwd + bwd) vs torch's in float64; returns (forward chunks, backward chunks,
    whether the forward kept its columns for dW)."""
    with naming(case):
        return _run_conv_case(case, chunk_log)


def _run_conv_case(case, chunk_log):
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.b, case.d, case.m, case.n, generator=gen, dtype=case.dtype)
    w = torch.randn(case.p, case.d, *case.kernel, generator=gen, dtype=case.dtype)
    w /= math.sqrt(case.d * case.kernel[0] * case.kernel[1])
    bias = torch.randn(case.p, generator=gen, dtype=case.dtype) if case.bias else None
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    needs = [case.need_x, case.need_w] + ([True] if case.bias else [])
    ours = [x.contiguous(memory_format=fmt).requires_grad_(case.need_x),
            w.clone().requires_grad_(case.need_w)] + ([bias.clone().requires_grad_()]
                                                     if case.bias else [])
    g = torch.randn((case.b, case.p, *case.geometry().out), generator=gen, dtype=torch.float64)
    (y_ref, *grads_ref), (y_mag, *grads_mag) = conv_reference(x, w, bias, g, case.stride,
                                                               case.padding, needs)
    if chunk_log is not None:
        chunk_log.clear()
    y = fast_conv.conv2d(*ours[:2], ours[2] if case.bias else None, case.stride, case.padding,
                         algo=case.algo)
    forward_chunks = list(chunk_log or [])
    kept = getattr(y.grad_fn, "kept_columns", None) is not None
    _close("y", y, y_ref, y_mag, RTOL[case.dtype], case)
    leaves = [i for i, need in enumerate(needs) if need]
    if chunk_log is not None:
        chunk_log.clear()
    grads = torch.autograd.grad(y, [ours[i] for i in leaves],
                                g.to(case.dtype).contiguous(memory_format=fmt))
    for i, ours_g, ref_g, mag_g in zip(leaves, grads, grads_ref, grads_mag):
        _close(["dx", "dW", "dbias"][i], ours_g, ref_g, mag_g, RTOL[case.dtype], case)
    return forward_chunks, list(chunk_log or []), kept


def conv_reference(x, w, bias, g, stride, padding, needs):
    """torch's [y, gradients asked for by `needs` (x, w, bias)] in float64, and the magnitudes
    of the sums behind each: the same on |x|, |w|, |bias| and |dY|."""
    def run(values, g):
        leaves = [t.detach().double().requires_grad_(need) for t, need in zip(values, needs)]
        y = F.conv2d(*leaves[:2], leaves[2] if bias is not None else None, stride, padding)
        return [y.detach(), *torch.autograd.grad(y, [t for t in leaves if t.requires_grad], g)]
    absolute = [t.abs() for t in (x, w, bias) if t is not None]
    return run([x, w, bias], g), run(absolute, g.abs())


CONV_SWEEP = conv_sweep()


@pytest.mark.parametrize("case", CONV_SWEEP, ids=[f"conv-{i}-" for i in range(len(CONV_SWEEP))])
def test_conv_sweep_matches_torch(case):
    run_conv_case(case)


def test_conv_sweep_covers_what_it_claims():
    # The seeded cases span the ranges the sweep promises (so a change of the generator that
    # narrows them fails here rather than silently testing less).
    def seen(f):
        return {f(c) for c in CONV_SWEEP}
    assert {1, 160} <= seen(lambda c: c.b) and max(seen(lambda c: max(c.d, c.p))) == 64
    assert set(range(1, 8)) <= seen(lambda c: c.kernel[0])
    assert seen(lambda c: c.kernel[0] == c.kernel[1]) == {True, False}       # rectangular too
    assert seen(lambda c: c.stride[0]) == {1, 2, 3} and seen(lambda c: c.padding[0]) == {0, 1, 2, 3}
    assert seen(lambda c: c.algo) == {None, *fast_conv.ALGORITHMS}
    assert seen(lambda c: (c.channels_last, c.bias, c.need_x, c.need_w)) == {
        (last, bias, need_x, need_w) for last in (False, True) for bias in (False, True)
        for need_x, need_w in ((True, True), (False, True), (True, False))}
    assert seen(lambda c: c.dtype) == {torch.float32, torch.float64}


def _case(b, d, p, m, n, k, s=1, pad=0, algo=None, last=False, bias=True, seed=0,
          need_x=True, need_w=True):
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    return ConvCase(b, d, p, m, n, pair(k), pair(s), pair(pad), last, bias, need_x, need_w,
                    algo, torch.float32, seed)


# The forward keeps the whole batch's columns (one chunk, at most KEEP_COLUMNS_BYTES) and dx runs
# in smaller chunks than the batch, the class of issue 14's crash: dW must read the kept columns
# chunk by chunk as the backward does. dx chunks are smaller where its per-image buffer is bigger
# than the columns: the flipped-kernel dx (stride 1, P <= 2D, or 1x1) on a big kernel or with
# P > D, and the shifted products (P > 2D >= 8) on wide planes; col2im's buffer is the columns'
# size, so it never is. Each case hits the path with the default budgets (asserted below from
# the chunks the loops actually ran):
KEPT_COLUMNS_CASES = [
    _case(64, 16, 32, 14, 14, 5),                          # issue 14: LeNet's conv3 widened
    _case(64, 16, 32, 14, 14, 5, algo="unfold", last=True),
    _case(64, 16, 32, 14, 14, 5, algo="im2col"),
    _case(64, 16, 32, 14, 14, 5, algo="im2col", last=True, bias=False),
    _case(160, 5, 10, 10, 10, 7, algo="unfold", seed=1),   # flipped-kernel dx, 7x7
    _case(160, 5, 10, 10, 10, 7, algo="im2col", last=True, seed=2),
    _case(160, 4, 32, 32, 32, (1, 2), pad=1, algo="unfold", seed=3),   # shifted-products dx
    _case(160, 2, 48, 32, 32, 1, algo="pointwise", seed=4),     # 1x1: dx = dY @ W, P > D
    _case(160, 2, 48, 32, 32, 1, algo="pointwise", last=True, bias=False, seed=5),
]


@pytest.mark.parametrize("case", KEPT_COLUMNS_CASES, ids=str)
def test_kept_columns_with_smaller_backward_chunks(case, chunk_log):
    forward_chunks, backward_chunks, kept = run_conv_case(case, chunk_log)
    assert kept and forward_chunks == [(case.b, case.b)], \
        f"expected the forward to keep the whole batch's columns: {forward_chunks}, {case}"
    assert min(chunk for _, chunk in backward_chunks) < case.b, \
        f"expected backward chunks smaller than the batch: {backward_chunks}, {case}"


# Columns bigger than CPU_CHUNK_BYTES: the forward and dW run in several chunks (the buffers are
# reused from chunk to chunk) and nothing is kept. Few output channels keep them cheap.
# (The random sweep has a few such cases too; these make sure of it.)
SEVERAL_CHUNKS_CASES = [
    _case(160, 64, 2, 16, 16, 3, pad=1, algo="unfold", seed=7),
    _case(160, 64, 3, 16, 16, 3, pad=1, algo="im2col", last=True, seed=8),
    _case(157, 16, 3, 20, 20, 5, s=(1, 2), algo="unfold", bias=False, seed=9),
    _case(160, 32, 4, 24, 24, 3, s=2, pad=1, algo="im2col", seed=10),
]


@pytest.mark.parametrize("case", SEVERAL_CHUNKS_CASES, ids=str)
def test_several_chunks_match_torch(case, chunk_log):
    forward_chunks, backward_chunks, kept = run_conv_case(case, chunk_log)
    assert not kept and len(forward_chunks) == 1 and forward_chunks[0][1] < case.b, \
        f"expected a forward in several chunks: {forward_chunks}, {case}"
    assert forward_chunks[0] in backward_chunks, \
        f"expected dW in the forward's chunks: {backward_chunks}, {case}"


def test_issue_14_widened_lenet_conv_trains():
    # The report's exact reproduction: cnnlab.nn.Conv2D(16, 32, 5) on [64, 16, 14, 14] raised
    # "Expected size ... [40, 100] but got [64, 100]" in the backward.
    torch.manual_seed(0)
    layer = cnn.Conv2D(16, 32, 5)
    x = torch.randn(64, 16, 14, 14, requires_grad=True)
    g = torch.randn(64, 32, 10, 10, dtype=torch.float64)
    layer(x).backward(g.float())
    ref, magnitude = conv_reference(x.detach(), layer.weight.detach(), layer.bias.detach(), g,
                                    1, 0, [True, True, True])
    ours = [x.grad, layer.weight.grad, layer.bias.grad]
    for what, a, r, m in zip(["dx", "dW", "dbias"], ours, ref[1:], magnitude[1:]):
        _close(what, a, r, m, RTOL[torch.float32], "nn.Conv2D(16, 32, 5) on [64, 16, 14, 14]")


@dataclass(frozen=True)
class PoolCase:
    b: int
    c: int
    m: int
    n: int
    kernel: tuple
    stride: tuple
    padding: tuple
    mode: str
    channels_last: bool
    ties: bool                  # ReLU'd input: windows of equal zeros (max-pool ties)
    dtype: torch.dtype
    seed: int


def _random_pool_case(rng, seed):
    kernel = _pair(rng, 1, 7)
    stride = _pair(rng, 1, 3, 0.85)
    padding = tuple(rng.randint(0, k // 2) for k in kernel)
    lo = [max(1, k - 2 * pad) for k, pad in zip(kernel, padding)]
    return PoolCase(b=rng.choice([1, 2, _log_int(rng, 1, 160), 64, 160]),
                    c=_channels(rng), m=rng.randint(lo[0], 32), n=rng.randint(lo[1], 32),
                    kernel=kernel, stride=stride, padding=padding, mode=rng.choice(["max", "avg"]),
                    channels_last=rng.random() < 0.5, ties=rng.random() < 0.3,
                    dtype=rng.choice([torch.float32, torch.float64]), seed=seed)


POOL_SWEEP = [_random_pool_case(random.Random(SEED + 1 + i), i) for i in range(POOL_SWEEP_CASES)]


@pytest.mark.parametrize("case", POOL_SWEEP, ids=[f"pool-{i}-" for i in range(len(POOL_SWEEP))])
def test_pool_sweep_matches_torch(case):
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.b, case.c, case.m, case.n, generator=gen, dtype=case.dtype)
    if case.ties:
        x = x.relu()
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    ours_x = x.contiguous(memory_format=fmt).requires_grad_()
    with naming(case):
        y = ops.pool2d(ours_x, case.kernel, case.stride, case.padding, mode=case.mode)
        g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (gx,) = torch.autograd.grad(y, [ours_x], g.to(case.dtype).contiguous(memory_format=fmt))

    def torch_pool(x):
        if case.mode == "max":
            return F.max_pool2d(x, case.kernel, case.stride, case.padding)
        return F.avg_pool2d(x, case.kernel, case.stride, case.padding, count_include_pad=True)
    ref_x = x.double().requires_grad_()
    y_ref = torch_pool(ref_x)
    # Magnitudes: the pool of |x|; dx's sums over the windows that route |dY| the same way.
    (gx_ref,) = torch.autograd.grad(y_ref, [ref_x], g, retain_graph=True)
    (gx_mag,) = torch.autograd.grad(y_ref, [ref_x], g.abs())
    rtol = RTOL[case.dtype]
    _close("y", y, y_ref.detach(), torch_pool(x.double().abs()), rtol, case)
    _close("dx", gx, gx_ref, gx_mag, rtol, case)


def test_pool_sweep_covers_what_it_claims():
    def seen(f):
        return {f(c) for c in POOL_SWEEP}
    assert set(range(1, 8)) <= seen(lambda c: c.kernel[0]) and max(seen(lambda c: c.b)) == 160
    assert max(seen(lambda c: c.c)) == 64
    assert seen(lambda c: c.stride[0]) == {1, 2, 3} and seen(lambda c: c.padding[0]) >= {0, 1, 2, 3}
    assert seen(lambda c: (c.mode, c.channels_last, c.ties)) == {
        (mode, last, ties) for mode in ("max", "avg") for last in (False, True)
        for ties in (False, True)}
