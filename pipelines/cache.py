"""Content-addressed on-disk cache for slow stages.

Stages (the prefix of each entry's name): ``teacher``, ``teacher-logits``,
``teacher-features``, ``student``, ``pruned``, ``qat`` (weights), ``onnx`` (an exported,
possibly quantized onnxruntime model).

A key is the SHA-256 of the stage name and everything that determines its output (task
identity, stage parameters, seed, torch version). Entries are plain tensors/state
dicts loaded with ``torch.load(weights_only=True)``; writes are atomic (temp file +
``os.replace``) under a file lock, so concurrent workers never read half a file or
train the same entry twice. An entry that does not load (truncated by a full disk, a
killed copy) is logged, deleted and rebuilt, never served and never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from filelock import FileLock, Timeout

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageUsage:
    """How many entries of one stage the cache holds and their size on disk."""

    stage: str
    entries: int
    bytes: int


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
                try:
                    return torch.load(target, weights_only=True), True
                except Exception as exc:  # truncated or corrupt (disk full, killed copy): rebuild it
                    logger.warning("stage cache entry %s is unreadable (%s: %s); deleted and rebuilt",
                                   target, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                    target.unlink()
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

    def _entries(self, stage: str | None = None) -> list[Path]:
        return sorted(p for p in self.root.glob("*.pt") if stage is None or _stage_of(p) == stage)

    def usage(self) -> list[StageUsage]:
        """Entries and bytes per stage (the module docstring lists them)."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry in self._entries():
            totals[_stage_of(entry)][0] += 1
            totals[_stage_of(entry)][1] += entry.stat().st_size
        return [StageUsage(stage, count, size) for stage, (count, size) in sorted(totals.items())]

    def clear(self, stage: str | None = None) -> tuple[int, int, int]:
        """Delete the entries (of ``stage``, or all); returns ``(deleted, bytes freed, skipped)``.

        An entry whose lock is held is being built or loaded by a running search right now:
        it is skipped, never pulled from under that reader.
        """
        deleted = freed = skipped = 0
        for entry in self._entries(stage):
            lock = FileLock(str(entry) + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                skipped += 1
                continue
            try:
                size = entry.stat().st_size
                entry.unlink()
                deleted, freed = deleted + 1, freed + size
            finally:
                lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)
        return deleted, freed, skipped


def _stage_of(entry: Path) -> str:
    """``student-<hash>.pt`` -> ``student`` (stage names may contain dashes, hashes do not)."""
    return entry.stem.rsplit("-", 1)[0]
