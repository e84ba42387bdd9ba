"""Shared by the benchmarks: facts about the machine a result was measured on."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_model", "status_mb"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory figure in MB (``VmRSS`` now, ``VmHWM`` this process's peak
    RSS; unlike ``ru_maxrss``, ``VmHWM`` does not inherit the parent's peak through fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{key}:")) / 1024
