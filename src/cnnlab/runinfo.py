"""What a run directory records besides its results: library versions, hardware, time, memory.

`environment()` -> a JSON-ready dict; `write_run_json(path, config, results, wall_s)` writes
run.json next to a run's outputs, so every figure can be traced to the software and machine.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, B on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def environment() -> dict:
    import torch

    from cnnlab import __version__

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    cuda = None
    if torch.cuda.is_available():
        cuda = {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    return {
        "cnnlab": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in
                     ("torch", "torchvision", "numpy", "pillow", "matplotlib", "rich", "mlxtend")},
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
    }


def write_run_json(path, config: dict, results: dict, wall_s: float):
    from cnnlab.train.runner import write_json

    return write_json(path, {"config": config, "results": results, "wall_s": round(wall_s, 3),
                             "peak_rss_mb": round(peak_rss_mb(), 1), "environment": environment()})
