"""The fast operators' algorithm chosen by measurement, per shape and machine, and remembered.

Which algorithm of `fast_conv.ALGORITHMS` is fastest depends on the CPU (or GPU), the thread
count and the shape: the thresholds of `fast_conv.choose_algorithm` were measured on two CPUs and
pick a slower one elsewhere. So, as cuDNN's benchmark mode and Triton's autotuner do, the first
call with a new key times every applicable algorithm on the call's own tensors, forward (+
backward when a gradient is needed), a few interleaved rounds, and keeps the fastest (median);
it departs from the rules' choice only for one that beat it in every round (see `_beats`).

Key = machine ("cpu AMD EPYC, 2 threads" / "cuda NVIDIA H100") + problem
("conv2d float32 nchw x64x6x14x14 w16x6x5x5 s1x1 p0x0 grad:w,b"): dtype, memory layout, input
shape with the batch rounded up to a power of two (40 -> 64: every last batch of an epoch would
otherwise be a new key), weight shape, stride, padding and the gradients needed (x, w, b; none
under torch.no_grad). Average pooling has two backward paths for tiling windows (LeNet's pool4),
tuned the same way; its key reads "pool2d:avg ... k2x2 s2x2 p0x0 grad:x".

Modes, `CNNLAB_AUTOTUNE=on|cached|off` or `set_mode()` / `using()` (default "on"):
  on      the cache (memory, then disk: see tune_cache), else time the candidates now
  cached  the cache, else the rules; never times
  off     the rules (`fast_conv.choose_algorithm`), as before the tuner
An `algo=` argument to fast_conv.conv2d always wins; then pinned choices (`pin`, `pinned`);
then the mode. `decisions()` returns every choice used so far, JSON-ready, in the form `pin`
takes back: a run records it and a resumed run replays it bit for bit whatever the cache says.

Cost, bounded per key (`Rounds`): one warm-up round; candidates 4x slower than the best there,
or 2x after the first timed round, are dropped; it stops after 2 rounds when one candidate is
ahead in every round, at 5 rounds, or after the round in which 0.25 s of timed work was passed.
A candidate that raises is skipped (its error is kept in the entry). The timer can be replaced
(`set_timer`) so tests need no clock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.errors import UserError

from .tune_cache import AutotuneWarning, DiskCache, cache_path

__all__ = ["MODES", "AutotuneWarning", "mode", "set_mode", "using", "pin", "pinned", "decisions",
           "reset_decisions", "retuning", "measurements", "set_timer", "reset", "stats",
           "conv_key", "pool_key", "cache_path"]

MODES = ("on", "cached", "off")
ENV_MODE = "CNNLAB_AUTOTUNE"
NATIVE = "native"          # torch's kernel, timed beside the candidates by `retuning` only


@dataclass(frozen=True)
class Rounds:
    """How long one key is timed (the seconds count the timed runs only)."""

    min_rounds: int = 2
    max_rounds: int = 5
    budget_s: float = 0.25      # per key (the lab's LeNet training: 10 keys, ~0.2 s in all)
    prune: float | None = 2.0   # drop candidates this many times slower than the best, after round 1
    prune_warm: float | None = 4.0  # ... and this many times, after the warm-up (unfold on 2x2
    # maps is 20x slower than im2col: timing it again would cost more than the rest of the key)
    tie: float = 0.03           # keep the rules' choice unless another beats it in every round
                                # both ran, and by more than 3% in the median (see _beats)


QUICK = Rounds()
THOROUGH = Rounds(min_rounds=5, max_rounds=5, budget_s=10.0, prune=None, prune_warm=None)


class _State:
    def __init__(self):
        self.mode = None            # Python setting; None: the environment
        self.timer = None           # (name, run) -> seconds; None: wall clock
        self.pins: dict[str, str] = {}
        self.used: dict[tuple, tuple[str, str]] = {}    # problem -> (algorithm, source)
        self.memory: dict[tuple, dict] = {}             # (device, index, threads, problem) -> entry
        self.disk: DiskCache | None = None
        self.retune: tuple[Rounds, set] | None = None   # (rounds, keys already retimed)
        self.measured: dict[str, dict] = {}             # problem text -> entry timed in this process
        self.tuned, self.tune_s = 0, 0.0


_state = _State()


def reset() -> None:
    """Forget everything in memory (settings, pins, decisions, cached entries); the disk stays."""
    global _state
    _state = _State()


# ------------------------------------------------------------------------------ settings

def mode() -> str:
    """The mode in force: set_mode()'s, else $CNNLAB_AUTOTUNE's, else "on"."""
    if _state.mode is not None:
        return _state.mode
    value = os.environ.get(ENV_MODE, "on").strip().lower() or "on"
    if value not in MODES:
        raise UserError(f"{ENV_MODE}={value!r}: expected one of {', '.join(MODES)}")
    return value


def set_mode(value: str | None) -> None:
    """"on", "cached" or "off" for this process; None goes back to $CNNLAB_AUTOTUNE."""
    if value is not None and value not in MODES:
        raise UserError(f"autotune mode {value!r}: expected one of {', '.join(MODES)}")
    _state.mode = value


@contextlib.contextmanager
def using(value: str):
    """`with using("off"):` a mode for the block only."""
    before = _state.mode
    set_mode(value)
    try:
        yield
    finally:
        _state.mode = before


def set_timer(timer) -> None:
    """timer(name, run) -> seconds for one call of run(); None restores the wall clock."""
    _state.timer = timer


def pin(choices) -> dict:
    """Use these choices ({problem key: algorithm}, or `decisions()`'s form) from now on, before
    any cache or rule; {} unpins. Returns the pins replaced."""
    before = dict(_state.pins)
    _state.pins = {k: v["algorithm"] if isinstance(v, dict) else v for k, v in choices.items()}
    return before


@contextlib.contextmanager
def pinned(choices):
    """`with pinned(recorded):` the choices pinned for the block (on top of outer pins)."""
    before = dict(_state.pins)
    pin({**before, **choices})
    try:
        yield
    finally:
        _state.pins = before


def decisions() -> dict:
    """{problem key: {"algorithm", "source"}} for every key used since the start or the last
    reset_decisions(); source is "pinned", "tuned" (timed now), "cache" or "rule"."""
    return {_text(p): {"algorithm": a, "source": s} for p, (a, s) in _state.used.items()}


def reset_decisions() -> None:
    _state.used.clear()


def measurements() -> dict:
    """{problem key: entry} for every key timed in this process: algorithm, rule (the rules'
    choice), ms (median per candidate), native_ms (under `retuning`), errors, rounds, tune_s."""
    return dict(_state.measured)


def stats() -> dict:
    """Keys timed in this process and the seconds spent on it (cache saves included)."""
    return {"keys_tuned": _state.tuned, "tune_s": _state.tune_s, "cache": str(cache_path())}


@contextlib.contextmanager
def retuning(rounds: Rounds = THOROUGH):
    """Within the block, time every key afresh once (even if cached, whatever the mode) with
    torch's own kernel in the same rounds (entry["native_ms"]); for `cnnlab tune` and benchmarks."""
    before = _state.retune
    _state.retune = (rounds, set())
    try:
        yield
    finally:
        _state.retune = before


# ------------------------------------------------------------------------------ keys

def _bucket(b: int) -> int:
    return 1 << (b - 1).bit_length()


def _layout(t) -> str:
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and \
        not t.is_contiguous()
    return "nhwc" if last else "nchw"


def _grads(*tensors) -> tuple:
    if not torch.is_grad_enabled():
        return ()
    return tuple(n for n, t in zip("xwb", tensors) if t is not None and t.requires_grad)


def _conv_problem(x, weight, bias, stride, padding) -> tuple:
    return ("conv2d", x.dtype, _layout(x), (_bucket(x.shape[0]), *x.shape[1:]),
            tuple(weight.shape), tuple(stride), tuple(padding), _grads(x, weight, bias))


def conv_key(x, weight, bias=None, stride=(1, 1), padding=(0, 0)) -> str:
    """The problem key of conv2d(x, weight, bias, stride, padding) as called now (grad mode and
    requires_grad included), as `decisions()` and `pin` spell it."""
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    return _text(_conv_problem(x, weight, bias, pair(stride), pair(padding)))


def _pool_problem(x, kernel, stride, padding, mode_name) -> tuple:
    return (f"pool2d:{mode_name}", x.dtype, _layout(x), (_bucket(x.shape[0]), *x.shape[1:]),
            tuple(kernel), tuple(stride), tuple(padding), _grads(x))


def pool_key(x, kernel, stride, padding, mode_name) -> str:
    """The problem key of a pool2d call (kernel, stride, padding as (h, w) pairs)."""
    return _text(_pool_problem(x, kernel, stride, padding, mode_name))


def _dims(shape) -> str:
    return "x".join(map(str, shape))


@functools.lru_cache(maxsize=1024)
def _text(problem: tuple) -> str:
    op, dtype, layout, xs, *rest, grads = problem
    grad = "grad:" + (",".join(grads) or "none")
    dt = str(dtype).replace("torch.", "")
    if op == "conv2d":
        ws, (sh, sw), (ph, pw) = rest
        return f"conv2d {dt} {layout} x{_dims(xs)} w{_dims(ws)} s{sh}x{sw} p{ph}x{pw} {grad}"
    kernel, stride, padding = rest
    return (f"{op} {dt} {layout} x{_dims(xs)} k{_dims(kernel)} s{_dims(stride)} "
            f"p{_dims(padding)} {grad}")


@functools.lru_cache(maxsize=16)
def _device_name(kind: str, index) -> str:
    if kind == "cuda":
        return f"cuda {torch.cuda.get_device_name(index)}"
    if kind == "cpu":
        from cnnlab.runinfo import cpu_model
        return f"cpu {cpu_model()}"
    return kind


def _machine(device) -> tuple:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return device.type, device.index, threads


def _machine_text(machine) -> str:
    kind, index, threads = machine
    name = _device_name(kind, index)
    return f"{name}, {threads} threads" if kind == "cpu" else name


# ------------------------------------------------------------------------------ deciding

def _disk() -> DiskCache:
    path = cache_path()
    if _state.disk is None or _state.disk.path != path:
        _state.disk = DiskCache(path)
    return _state.disk


def _decide(problem, device, rule, valid, candidates, native) -> str:
    """The algorithm for `problem`: pinned, else by mode (see the module docstring).

    rule() -> the rules' choice; valid(algo) -> whether it applies here; candidates() ->
    {name: run} and native() -> run (or None), built only when timing.
    """
    if _state.pins:
        algo = _state.pins.get(_text(problem))
        if algo is not None:
            if not valid(algo):
                raise UserError(f"pinned algorithm {algo!r} does not apply to {_text(problem)}")
            return _use(problem, algo, "pinned")
    current = mode()
    retune = _state.retune
    if current == "off" and retune is None:
        return _use(problem, rule(), "rule")
    machine = _machine(device)
    key = (*machine, problem)
    entry, source = _state.memory.get(key), "cache"
    if retune is not None and key not in retune[1]:
        retune[1].add(key)
        entry, source = _tune(problem, machine, rule(), candidates(), native(), retune[0]), "tuned"
    elif entry is None and current != "off":
        entry = _disk().entries.get(f"{_machine_text(machine)} | {_text(problem)}")
        if entry is None and current == "on":
            entry, source = _tune(problem, machine, rule(), candidates(), None, QUICK), "tuned"
        if entry is not None:
            _state.memory[key] = entry
    if entry is None or current == "off" or not valid(entry["algorithm"]):
        return _use(problem, rule(), "rule")
    return _use(problem, entry["algorithm"], source)


def _use(problem, algo, source) -> str:
    if _state.used.get(problem, (None,))[0] != algo:
        _state.used[problem] = (algo, source)
    return algo


def _tune(problem, machine, rule_algo, runs, native, rounds) -> dict:
    """Time `runs` (and `native`), keep the fastest; store the entry in memory and on disk."""
    start = time.perf_counter()
    times, errors, done = _measure(runs, native, rounds, _state.timer or _wall_timer(machine))
    ms = {n: 1e3 * statistics.median(t) for n, t in times.items() if n != NATIVE}
    best = min(ms, key=ms.get) if ms else rule_algo
    if best != rule_algo and rule_algo in ms and not _beats(times[best], times[rule_algo],
                                                            rounds.tie):
        best = rule_algo
    entry = {"algorithm": best, "rule": rule_algo, "ms": ms, "errors": errors, "rounds": done,
             "tune_s": round(time.perf_counter() - start, 4),
             "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if NATIVE in times:
        entry["native_ms"] = 1e3 * statistics.median(times[NATIVE])
    _state.memory[(*machine, problem)] = entry
    _state.measured[_text(problem)] = entry
    disk = _disk()
    disk.entries[f"{_machine_text(machine)} | {_text(problem)}"] = entry
    disk.save()
    _state.tuned += 1
    _state.tune_s += time.perf_counter() - start           # the save included
    return entry


def _wall_timer(machine):
    kind, index, _ = machine
    sync = (lambda: torch.cuda.synchronize(index)) if kind == "cuda" else (lambda: None)

    def timer(name, run):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - t0
    return timer


def _measure(runs, native, rounds: Rounds, timer):
    """Interleaved rounds (order rotated each round) -> ({name: [seconds]}, errors, rounds).

    Candidates dropped by the pruning keep the times they have (those dropped after the warm-up:
    its time), for the record: they were far slower anyway."""
    fns = dict(runs)
    if native is not None:
        fns[NATIVE] = native
    alive, errors = list(fns), {}
    warm, times, spent = {}, {n: [] for n in fns}, 0.0

    def once(name):
        nonlocal spent
        try:
            t = timer(name, fns[name])
        except Exception as err:                      # a broken candidate is skipped, not fatal
            errors[name] = f"{type(err).__name__}: {err}"
            alive.remove(name)
            return None
        spent += t
        return t

    for name in list(alive):
        warm[name] = once(name)
    if rounds.prune_warm and len(ours := [n for n in alive if n != NATIVE]) > 1:
        best = min(warm[n] for n in ours)
        alive = [n for n in alive if n == NATIVE or warm[n] <= rounds.prune_warm * best]
    done = 0
    for r in range(rounds.max_rounds):
        order = alive[r % len(alive):] + alive[:r % len(alive)] if alive else []
        for name in order:
            t = once(name)
            if t is not None:
                times[name].append(t)
        done += 1
        ours = [n for n in alive if n != NATIVE]
        if not ours:
            break
        if r == 0 and rounds.prune:
            best = min(min(times[n][0], warm[n]) for n in ours)
            for n in ours:
                if min(times[n][0], warm[n]) > rounds.prune * best:
                    alive.remove(n)
            ours = [n for n in alive if n != NATIVE]
        if spent > rounds.budget_s or (done >= rounds.min_rounds and _clear_leader(times, ours)):
            break                                     # over budget: one timed round is enough
    return {n: t or [warm[n]] for n, t in times.items() if n not in errors}, errors, done


def _beats(ours, rules, tie) -> bool:
    """Whether a candidate beat the rules' choice in every round both ran (the rounds are
    interleaved: the same load hit both), by more than `tie` in the median. Noise (a loaded
    machine) makes rounds disagree, and the rules' choice stays."""
    pairs = list(zip(ours, rules))
    return all(a < b for a, b in pairs) and \
        statistics.median(ours) * (1 + tie) < statistics.median(rules)


def _clear_leader(times, names) -> bool:
    """One candidate faster than every other in every round so far."""
    if len(names) < 2:
        return True
    leader = min(names, key=lambda n: statistics.median(times[n]))
    return all(max(times[leader]) < min(times[n]) for n in names if n != leader)


# ------------------------------------------------------------------------------ operators

def _step(forward, leaves, needs, y_shape, like):
    """A closure running forward(*leaves) and, when `needs` names any leaf, the backward of a
    dense upstream gradient through autograd, as training runs it (torch.autograd.grad: nothing
    accumulates in .grad). Leaves are detached copies of the call's tensors; the gradient comes
    from a private generator, so training's random stream is left untouched."""
    leaves = [None if t is None else t.detach().requires_grad_(n) for t, n in zip(leaves, needs)]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    if not wanted:
        return lambda: forward(*leaves)
    gen = torch.Generator().manual_seed(0)
    gy = torch.randn(y_shape, generator=gen, dtype=like.dtype).to(like.device)
    return lambda: torch.autograd.grad(forward(*leaves), wanted, gy)


def conv_algorithm(x, weight, bias, stride, padding, geo, algorithms, applies, rule,
                   apply) -> str:
    """fast_conv.conv2d's choice when no `algo` is forced: one of `algorithms` for which
    applies(name, x_shape, geo); rule(x_shape, w_shape, geo, x_channels_last) is the rules'
    choice; apply(x, weight, bias, geo, name) -> y runs one (autograd-aware)."""
    problem = _conv_problem(x, weight, bias, stride, padding)
    grads = problem[-1]
    needs = ("x" in grads, "w" in grads, "b" in grads)
    y_shape = (x.shape[0], weight.shape[0], *geo.out)

    def candidates():
        return {a: _step(lambda *t, a=a: apply(*t, geo, a), (x, weight, bias), needs, y_shape, x)
                for a in algorithms if applies(a, x.shape, geo)}

    def native():
        return _step(lambda *t: F.conv2d(*t, stride, padding), (x, weight, bias), needs,
                     y_shape, x)

    return _decide(problem, x.device,
                   lambda: rule(x.shape, weight.shape, geo, _layout(x) == "nhwc"),
                   lambda a: a in algorithms and applies(a, x.shape, geo), candidates, native)


def pool_algorithm(x, kernel, stride, padding, mode_name, algorithms, apply) -> str:
    """fast_pool's choice among `algorithms` (the first is the rules' choice); apply(x, kernel,
    stride, padding, algo) -> y. The paths differ in the backward only: without a gradient, or
    with one path, there is nothing to tune."""
    if len(algorithms) == 1 or not _grads(x):
        return algorithms[0]
    problem = _pool_problem(x, kernel, stride, padding, mode_name)
    y_shape = tuple(x.shape[:2]) + tuple((m + 2 * p - k) // s + 1 for m, k, s, p in
                                         zip(x.shape[2:], kernel, stride, padding))

    def candidates():
        return {a: _step(lambda t, a=a: apply(t, kernel, stride, padding, a), (x,), (True,),
                         y_shape, x) for a in algorithms}

    def native():
        if mode_name == "max":
            return _step(lambda t: F.max_pool2d(t, kernel, stride, padding), (x,), (True,),
                         y_shape, x)
        return _step(lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad=True),
                     (x,), (True,), y_shape, x)

    return _decide(problem, x.device, lambda: algorithms[0], lambda a: a in algorithms,
                   candidates, native)
