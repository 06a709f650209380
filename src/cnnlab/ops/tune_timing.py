"""How the autotuner times one key's candidates: interleaved rounds, pruning, early stop.

`measure(runs, native, rounds, timer)` runs one warm-up round, then rounds of one timed call of
every candidate, the order rotated each round so drift and load hit all alike; candidates far
behind are dropped (`Rounds.prune_warm`, `Rounds.prune`), and it stops early on a clear leader
or once `Rounds.budget_s` of timed work is spent. `beats` is the test a candidate must pass to
replace the rules' choice. The timer is a parameter: tests pass a fake clock.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

NATIVE = "native"          # torch's kernel, timed beside the candidates by `retuning` only


@dataclass(frozen=True)
class Rounds:
    """How long one key is timed (the seconds count the timed runs only)."""

    min_rounds: int = 2
    max_rounds: int = 5
    budget_s: float = 0.25      # per key (the lab's LeNet training: 13 keys, ~0.1 s in all)
    prune: float | None = 2.0   # drop candidates this many times slower than the best after
                                # the first timed round,
    prune_warm: float | None = 4.0  # ... or this many after the warm-up (unfold on 2x2 maps is
    # 20x slower than im2col: timing it again would cost more than the rest of the key)
    tie: float = 0.03           # keep the rules' choice unless another beats it in every round
                                # both ran, and by more than 3% in the median (see `beats`)


QUICK = Rounds()
THOROUGH = Rounds(min_rounds=5, max_rounds=5, budget_s=10.0, prune=None, prune_warm=None)


def wall_timer(machine):
    """timer(name, run) -> seconds of wall clock, the device synchronised around (CUDA)."""
    kind, index, _ = machine
    sync = (lambda: torch.cuda.synchronize(index)) if kind == "cuda" else (lambda: None)

    def timer(name, run):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - t0
    return timer


def measure(runs, native, rounds: Rounds, timer):
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
        if spent > rounds.budget_s or (done >= rounds.min_rounds and clear_leader(times, ours)):
            break                                     # over budget: one timed round is enough
    return {n: t or [warm[n]] for n, t in times.items() if n not in errors}, errors, done


def beats(ours, rules, tie) -> bool:
    """Whether a candidate beat the rules' choice in every round both ran (the rounds are
    interleaved: the same load hit both), by more than `tie` in the median. Noise (a loaded
    machine) makes rounds disagree, and the rules' choice stays."""
    pairs = list(zip(ours, rules))
    return all(a < b for a, b in pairs) and \
        statistics.median(ours) * (1 + tie) < statistics.median(rules)


def clear_leader(times, names) -> bool:
    """One candidate faster than every other in every round so far."""
    if len(names) < 2:
        return True
    leader = min(names, key=lambda n: statistics.median(times[n]))
    return all(max(times[leader]) < min(times[n]) for n in names if n != leader)
