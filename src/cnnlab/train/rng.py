"""Seeding, deterministic mode, and random-state capture/restore for exact resume.

Every state is stored as tensors, ints, floats and None only, so a checkpoint holding it still
loads with `torch.load(weights_only=True)`: Python's `random` state tuple and numpy's legacy
MT19937 tuple are converted to int64 tensors.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (all devices); with `deterministic`, also make torch's kernels
    deterministic (`torch.use_deterministic_algorithms(True)`, no cuDNN autotuning)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this to be deterministic; harmless on CPU. Set before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for the data order: shuffling and DataLoader worker seeds come from it."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed numpy and Python from the worker's torch seed, which the
    DataLoader derives from its (seeded) generator, so worker randomness repeats run to run."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def capture_rng(data_generator: torch.Generator | None = None) -> dict:
    """Every random state that influences training -> a weights_only-safe dict."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    return state


def restore_rng(state: dict, data_generator: torch.Generator | None = None) -> None:
    """Undo `capture_rng`: put every captured state back (the data order into `data_generator`)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_generator is not None and "data" in state:
        data_generator.set_state(state["data"])
