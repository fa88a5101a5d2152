"""What a run checks before anything is trained or recorded, and the host state it owns.

A space the task cannot fill, a runtime this host cannot compile for, an output folder
that cannot be written or a server that does not answer would otherwise surface after
the teacher trained, or half-way through the first trial; each is one line naming the fix.
One ``slimsearch run`` owns a study per host (a second would draw the same candidates);
workers join instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import psutil
from filelock import FileLock, Timeout

from slimsearch.evaluators import serving_runtime
from slimsearch.pipelines import Task, space_problem
from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.loop.errors import SearchError
from slimsearch.search.store.storage import unreachable


def check_before_training(cfg: SlimsearchConfig, task: Task, worker: int) -> None:
    """Raise :class:`SearchError` for what would fail later: the space, the compiler, the
    output folder and -- for the run's owner -- the servers (a worker started moments later,
    or one joining an overnight run, waits an outage out like every call)."""
    if problem := space_problem(task, cfg.space.students_from_scratch):
        raise SearchError(problem)
    for runtime in map(serving_runtime, cfg.space.parallel.runtimes):
        if problem := runtime.host_problem():
            raise SearchError(f"{problem}; install it or remove {runtime.name} from space.parallel.runtimes")
    _check_writable(Path(cfg.output_dir))
    for setting, url in (("search.storage", cfg.storage_url), ("tracking.tracking_uri", cfg.tracking_uri)):
        if not worker and (problem := unreachable(url)):
            raise SearchError(f"{setting} {redact_url(url)} does not answer ({problem}); start the server or "
                              "correct the URL (nothing was trained or recorded)")


@contextlib.contextmanager
def owning_run(config: SlimsearchConfig, worker: int) -> Iterator[None]:
    """One ``slimsearch run`` per study and host: a second one would draw the same
    candidates (same sampler seed) and double the budget's owner; workers join instead."""
    if worker:
        yield
        return
    name = config.search.study_name
    lock = FileLock(str(Path(config.output_dir) / f".{name}.run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SearchError(f"study '{name}' is already being run by another slimsearch run on this host; "
                          "add processes to it with slimsearch worker CONFIG, or wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()


def _check_writable(directory: Path) -> None:
    """Stores, cache and artifacts all go under output_dir: find out before anything is trained."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SearchError(f"output_dir '{directory}' is not a writable folder ({exc.strerror or exc}); "
                          "choose another output_dir") from None


def remove_orphaned_workdirs(root: Path) -> None:
    """Temp folders of processes that died (SIGKILL, OOM) are left behind; remove them."""
    for entry in root.glob("*") if root.exists() else []:
        if entry.is_dir() and entry.name.isdigit() and not psutil.pid_exists(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file():  # the flat layout of earlier versions
            entry.unlink(missing_ok=True)


def cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
