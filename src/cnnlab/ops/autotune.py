"""The fast operators' algorithm chosen by measurement, per shape and machine, and remembered.

Which algorithm of `fast_conv.ALGORITHMS` is fastest depends on the CPU (or GPU), the thread
count and the shape: the thresholds of `fast_conv.choose_algorithm` were measured on two CPUs and
pick a slower one elsewhere. So, as cuDNN's benchmark mode and Triton's autotuner do, the first
call with a new key times every applicable algorithm on the call's own tensors, forward (+
backward when a gradient is needed), a few interleaved rounds, and keeps the fastest (median);
it departs from the rules' choice only for one that beat it in every round (tune_timing.beats).

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
import os
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.errors import UserError

from . import tune_keys as keys
from . import tune_timing as timing
from .tune_cache import AutotuneWarning, DiskCache, cache_path
from .tune_keys import conv_key, pool_key
from .tune_timing import NATIVE, QUICK, THOROUGH, Rounds

__all__ = ["MODES", "AutotuneWarning", "mode", "set_mode", "using", "pin", "pinned", "decisions",
           "reset_decisions", "retuning", "measurements", "set_timer", "reset", "stats",
           "conv_key", "pool_key", "cache_path", "Rounds", "QUICK", "THOROUGH", "NATIVE"]

MODES = ("on", "cached", "off")
ENV_MODE = "CNNLAB_AUTOTUNE"


class _State:
    def __init__(self):
        self.mode = None            # Python setting; None: the environment
        self.timer = None           # (name, run) -> seconds; None: wall clock
        self.pins: dict[str, str] = {}
        self.used: dict[tuple, tuple[str, str]] = {}    # problem -> (algorithm, source)
        self.memory: dict[tuple, dict] = {}     # (device type, index, threads, problem) -> entry
        self.disk: DiskCache | None = None
        self.retune: tuple[Rounds, set] | None = None   # (rounds, keys already retimed)
        self.measured: dict[str, dict] = {}     # problem text -> entry timed in this process
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
    return {keys.problem_text(p): {"algorithm": a, "source": s}
            for p, (a, s) in _state.used.items()}


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
        algo = _state.pins.get(keys.problem_text(problem))
        if algo is not None:
            if not valid(algo):
                raise UserError(f"pinned algorithm {algo!r} does not apply to "
                                f"{keys.problem_text(problem)}")
            return _use(problem, algo, "pinned")
    current = mode()
    retune = _state.retune
    if current == "off" and retune is None:
        return _use(problem, rule(), "rule")
    machine = keys.machine_of(device)
    key = (*machine, problem)
    entry, source = _state.memory.get(key), "cache"
    if retune is not None and key not in retune[1]:
        retune[1].add(key)
        entry, source = _tune(problem, machine, rule(), candidates(), native(), retune[0]), "tuned"
    elif entry is None and current != "off":
        entry = _disk().entries.get(_disk_key(machine, problem))
        if entry is None and current == "on":
            entry, source = _tune(problem, machine, rule(), candidates(), None, QUICK), "tuned"
        if entry is not None:
            _state.memory[key] = entry
    if entry is None or current == "off" or not valid(entry["algorithm"]):
        return _use(problem, rule(), "rule")
    return _use(problem, entry["algorithm"], source)


def _disk_key(machine, problem) -> str:
    return f"{keys.machine_text(machine)} | {keys.problem_text(problem)}"


def _use(problem, algo, source) -> str:
    if _state.used.get(problem, (None,))[0] != algo:
        _state.used[problem] = (algo, source)
    return algo


def _tune(problem, machine, rule_algo, runs, native, rounds) -> dict:
    """Time `runs` (and `native`), keep the fastest; store the entry in memory and on disk."""
    start = time.perf_counter()
    timer = _state.timer or timing.wall_timer(machine)
    times, errors, done = timing.measure(runs, native, rounds, timer)
    ms = {n: 1e3 * statistics.median(t) for n, t in times.items() if n != NATIVE}
    best = min(ms, key=ms.get) if ms else rule_algo
    if best != rule_algo and rule_algo in ms and \
            not timing.beats(times[best], times[rule_algo], rounds.tie):
        best = rule_algo                       # noise, not a faster algorithm: keep the rules'
    entry = {"algorithm": best, "rule": rule_algo, "ms": ms, "errors": errors, "rounds": done,
             "tune_s": round(time.perf_counter() - start, 4),
             "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if NATIVE in times:
        entry["native_ms"] = 1e3 * statistics.median(times[NATIVE])
    _state.memory[(*machine, problem)] = entry
    _state.measured[keys.problem_text(problem)] = entry
    disk = _disk()
    disk.entries[_disk_key(machine, problem)] = entry
    disk.save()
    _state.tuned += 1
    _state.tune_s += time.perf_counter() - start           # the save included
    return entry


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
    problem = keys.conv_problem(x, weight, bias, stride, padding)
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
                   lambda: rule(x.shape, weight.shape, geo, keys.layout(x) == "nhwc"),
                   lambda a: a in algorithms and applies(a, x.shape, geo), candidates, native)


def pool_algorithm(x, kernel, stride, padding, mode_name, algorithms, apply) -> str:
    """fast_pool's choice among `algorithms` (the first is the rules' choice); apply(x, kernel,
    stride, padding, algo) -> y. The paths differ in the backward only: without a gradient, or
    with one path, there is nothing to tune."""
    if len(algorithms) == 1 or not keys.grads_needed(x):
        return algorithms[0]
    problem = keys.pool_problem(x, kernel, stride, padding, mode_name)
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
