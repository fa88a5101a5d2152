"""What keeps measurements comparable: a per-host timing lock and the hardware identity.

Two trials timing at once on a 2-core host inflate each other's latency 2-3.5x, so every
timed window runs under one exclusive file lock per host (and user). Each measurement
carries the identity of the machine and runtime it was taken on, so numbers from
different hardware are never silently mixed on one front.
"""

from __future__ import annotations

import getpass
import os
import platform
import tempfile
from functools import cache
from pathlib import Path

import torch
from filelock import FileLock


def timing_lock_path() -> Path:
    return Path(tempfile.gettempdir()) / f"slimsearch-{getpass.getuser()}-timing.lock"


def timing_lock() -> FileLock:
    """The host-wide lock that serialises timed windows across processes."""
    return FileLock(str(timing_lock_path()))


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_identity() -> dict[str, str]:
    """CPU model, usable cores and runtime versions: the key for comparing measurements."""
    return {
        "cpu": cpu_model(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": str(torch.__version__),
        "platform": platform.platform(terse=True),
    }
