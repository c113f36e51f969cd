"""Where a computation ran: the CPU model, the torch and library versions, the threads and the device.

Training is not bit-identical across CPUs, thread counts and versions (floating-point summation order
differs), so a result file records its machine: a rerun elsewhere trains somewhat different models,
and the intervals, not the digits, are what should carry over.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), or ``"unknown"``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    """The machine and software a run used, as plain data (``results.json``'s ``"environment"``)."""
    from . import __version__, build_info

    gpu = None
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device.index if device.index is not None else torch.cuda.current_device())
    return {"nonrobust_ext": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": cpu_model(), "cpu_isa": build_info().get("cpu_isa"), "threads": torch.get_num_threads(),
            "device": str(device), "gpu": gpu}


__all__ = ["cpu_model", "environment"]
