"""Content-addressed on-disk cache for slow stages (teacher, students, pruned weights).

A key is the SHA-256 of the stage name and everything that determines its output (task
identity, stage parameters, seed, torch version). Entries are plain tensors/state
dicts loaded with ``torch.load(weights_only=True)``; writes are atomic (temp file +
``os.replace``) under a file lock, so concurrent workers never read half a file or
train the same entry twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from filelock import FileLock

T = TypeVar("T")


class StageCache:
    """Get-or-build store of stage outputs under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(stage: str, **parts: Any) -> str:
        payload = json.dumps({"stage": stage, "torch": torch.__version__, **parts}, sort_keys=True, default=str)
        return f"{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get_or_build(self, key: str, build: Callable[[], T]) -> tuple[T, bool]:
        """Return ``(value, hit)``; on a miss, build and store the value while holding the key's lock."""
        target = self.path(key)
        with FileLock(str(target) + ".lock"):
            if target.exists():
                return torch.load(target, weights_only=True), True
            value = build()
            self._atomic_save(value, target)
            return value, False

    def _atomic_save(self, value: Any, target: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
