"""Random-state capture/restore: every generator continues exactly after a checkpoint round trip,
and the stored state loads with weights_only."""

import random

import numpy as np
import torch

from cnnlab.train import checkpoint as ckpt
from cnnlab.train.rng import capture_rng, make_generator, restore_rng, seed_everything


def _draw(gen):
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
            torch.rand(3).tolist(), torch.randperm(10, generator=gen).tolist())


def test_capture_restore_through_a_checkpoint_file(tmp_path):
    seed_everything(7)
    gen = make_generator(11)
    _draw(gen)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.randn()   # ... and in numpy's
    state = capture_rng(gen)
    path = ckpt.save_checkpoint(tmp_path / "rng.pt", {"format": "cnnlab.checkpoint", "version": 1,
                                                          "rng": state})
    expected = [_draw(gen) for _ in range(3)]

    seed_everything(999)  # scramble everything
    gen2 = make_generator(5)
    _draw(gen2)
    restore_rng(ckpt.load_checkpoint(path)["rng"], gen2)
    assert [_draw(gen2) for _ in range(3)] == expected


def test_seed_everything_repeats_and_deterministic_mode():
    seed_everything(3)
    a = _draw(make_generator(3))
    seed_everything(3, deterministic=True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert _draw(make_generator(3)) == a
    finally:
        torch.use_deterministic_algorithms(False)
