"""What a run directory records besides its results: library versions, hardware, time, memory.

`environment()` -> a JSON-ready dict; `write_run_json(path, config, results, wall_s, run_id)`
writes run.json next to a run's outputs, so every figure can be traced to the software and
machine; `peak_rss_bytes()` is the one measure of peak memory.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata

from cnnlab.atomic import write_json


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


def peak_rss_bytes(children: bool = False) -> int:
    """Peak resident set size so far, in bytes, of this process (or, with `children`, of the
    largest of its finished child processes). ru_maxrss is KiB on Linux, bytes on macOS."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


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


def write_run_json(path, config: dict, results: dict, wall_s: float, run_id: str | None = None):
    """run.json: the run's id, config, results, wall time, peak RSS (MiB) and environment."""
    return write_json(path, {"run_id": run_id, "config": config, "results": results,
                             "wall_s": round(wall_s, 3),
                             "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
                             "environment": environment()})
