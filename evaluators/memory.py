"""Resident-memory high-water mark of this process, resettable.

``ru_maxrss`` cannot be reset and tracemalloc does not see tensor storage, so the peak
is read from ``VmHWM`` in ``/proc/self/status`` after resetting it by writing ``5`` to
``/proc/self/clear_refs`` (Linux). This must run in a fresh process per measurement so
the baseline is the bare runtime, not an earlier trial's leftovers.

File-backed pages (shared-library code) are excluded from what a model is charged: they
are shared between processes, and how many of them a fault maps depends on page-cache
state — the same artifact read 16 MiB from one venv and 26.6 MiB from a freshly installed
but identical one, all of the difference in ``RssFile``.

``state_dict_bytes`` is the other memory figure: the weights' serialized size.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in {_STATUS}; resident-memory measurement needs Linux /proc")


def file_rss_bytes() -> int:
    """Resident file-backed pages (mapped libraries and files)."""
    return _status_kib("RssFile") * 1024


def current_rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Make the high-water mark equal to the current RSS."""
    _CLEAR_REFS.write_text("5")


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what shipping the weights costs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
