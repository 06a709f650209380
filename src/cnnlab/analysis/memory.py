"""Peak memory of one convolution forward + backward, ours vs torch's (`benchmarks/ops.py`).

On the CPU each side runs in a fresh child process and the growth of its peak RSS is measured,
so torch's and oneDNN's private buffers count too; on CUDA, torch's allocator statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import torch

from cnnlab.analysis.speed import ConvShape, algorithm, conv_key, conv_shapes, conv_step
from cnnlab.ops import autotune


def _largest(shapes):
    """The shape with the most activation values (input + output): the biggest memory user."""
    def size(s):
        ho = (s.h + 2 * s.pad - s.k) // s.s + 1
        return s.d * s.h * s.h + s.p * ho * ho
    return max(shapes, key=size)


def peak_memory(shape: ConvShape, impl: str, batch: int, device="cpu") -> int:
    """Extra bytes at the peak of one conv forward+backward, beyond the inputs already held.

    CPU: a fresh child process (peak RSS minus RSS before the step, so torch's and oneDNN's
    private buffers count too). CUDA: torch.cuda.max_memory_allocated around the step.
    The fast conv runs the algorithm `algorithm()` names (pinned: no tuning inside the step).
    """
    pins = {conv_key(shape, batch): algorithm(shape, batch)}
    if torch.device(device).type == "cuda":
        step = conv_step(shape, impl, batch, torch.device(device))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with autotune.pinned(pins):
            step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    code = ("import json,sys; from cnnlab.analysis import memory; "
            "print(json.dumps(memory._child_peak(json.loads(sys.argv[1]), sys.argv[2], "
            "int(sys.argv[3]), json.loads(sys.argv[4]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(shape)), impl, str(batch),
                          json.dumps(pins)], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _child_peak(shape_dict, impl, batch, pins=None):
    """Peak RSS growth (bytes) of one conv forward+backward, in this (fresh) process."""
    autotune.pin(pins or {})
    autotune.set_mode("cached")         # the warm-up's batch-1 key: never timed here
    shape = ConvShape(**shape_dict)
    conv_step(shape, impl, 1, torch.device("cpu"))()    # one-time set-up (kernels, thread pool)
    step = conv_step(shape, impl, batch, torch.device("cpu"))
    try:
        # Reset the peak (VmHWM) to the current RSS, so library pages dropped from memory by
        # other processes' pressure before the step cannot make the growth look larger.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - base) * 1024


def measure_memory(batch=64, device="cpu") -> dict:
    shape = _largest(conv_shapes())
    native = peak_memory(shape, "native", batch, device)
    fast = peak_memory(shape, "fast", batch, device)
    return {"shape": shape.label(), "where": shape.where, "native_bytes": native,
            "fast_bytes": fast, "ratio": fast / max(1, native)}
