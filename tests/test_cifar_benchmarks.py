"""The CIFAR benchmarks run: benchmarks/cifar.py measures one tiny row (Runner and bare loop on
the same batches), benchmarks/gpu.py refuses at once, in one line, without a GPU."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_cifar_benchmark_times_runner_and_bare_loop_on_one_row():
    cifar = _load("cifar")
    cfg = cifar.fast_config("resnet18-vision", "cpu", "bf16", True, "native", 2, 1)
    row = cifar.measure(cfg, steps=1, pairs=1, sync=lambda: None)
    assert (row["model"], row["amp"], row["channels_last"], row["ops"]) == \
        ("resnet18-vision", "bf16", True, "native")
    assert row["runner_img_s"] > 0 and row["bare_img_s"] > 0 and len(row["ratios"]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_benchmark_fails_fast_without_a_gpu(capsys):
    gpu = _load("gpu")
    with pytest.raises(SystemExit) as stop:
        gpu.main([])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and "no CUDA GPU" in err
