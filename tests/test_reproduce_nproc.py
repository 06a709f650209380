"""`cnnlab reproduce --seeds N --nproc P`: the seeds' trainings in P processes at once (a
concurrent.futures process pool, spawn) give the same figures as one after another with the
same number of threads; each training is independent and deterministic given its threads."""

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.report.reproduce import Context, ReproduceOptions
from cnnlab.report.trainings import training_phase, training_pool

FIGURES = ("seed", "best_dev", "best_step", "test_acc", "test_loss", "steps", "n_dev_evals", "sizes")


@pytest.mark.slow  # two spawned processes import torch
def test_seeds_in_parallel_processes_give_the_figures_of_seeds_in_turn(tmp_path):
    from cnnlab.data import load_mnist

    data = load_mnist("bundled", "lab")
    phase = training_phase("lenet")
    parallel = ReproduceOptions(out=tmp_path / "p", seeds=2, quick=True, device="cpu", quiet=True,
                                nproc=2)
    with training_pool(parallel) as pool:
        assert pool is not None
        runs_p = phase(Context(parallel, console=None, data=data, pool=pool))["runs"]
        threads = pool[1]
    in_turn = ReproduceOptions(out=tmp_path / "s", seeds=2, quick=True, device="cpu", quiet=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with training_pool(in_turn) as none:
            assert none is None
            runs_s = phase(Context(in_turn, console=None, data=data))["runs"]
    finally:
        torch.set_num_threads(before)
    assert [r["seed"] for r in runs_p] == [100, 101]
    for p, s in zip(runs_p, runs_s):
        assert {k: p[k] for k in FIGURES} == {k: s[k] for k in FIGURES}
        assert p["config"]["threads"] == threads and (tmp_path / "p" / "lenet" / f"seed{p['seed']}"
                                                      / "best.pt").is_file()


def test_nproc_must_be_a_positive_integer(tmp_path):
    with pytest.raises(UserError, match="--nproc must be a positive integer"):
        ReproduceOptions(out=tmp_path, seeds=2, nproc=0)
