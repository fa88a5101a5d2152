"""Local worker processes that share the study of a ``slimsearch run --workers N``.

The run's own process creates the study, the MLflow parent run and the teacher baseline
first (two processes creating a fresh SQLite database at once crash both Optuna and
MLflow), then starts ``N - 1`` workers: ``python -m slimsearch.search.cli worker``
processes in their own sessions, each logging to ``<output_dir>/logs``. A stop request
(or the run's ``--timeout``) is forwarded once as SIGTERM (finish the running trial),
also while the run waits for them at the end; an abort is forwarded again, and a worker
still alive ``ABORT_GRACE_S`` later is killed, so none outlives the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from slimsearch.search.config import SlimsearchConfig


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen
    log_path: Path
    log: IO[str]


def spawn_workers(config: SlimsearchConfig, count: int) -> list[WorkerProcess]:
    """Start workers 1..count on this host, each reading a copy of ``config``."""
    if count < 1:
        return []
    directory = Path(config.output_dir) / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{config.search.study_name}-worker-config.yaml"
    # JSON is YAML; owner-only, as it holds the storage URL (and any password in it).
    descriptor = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(config.model_dump_json(indent=1))
    config_path.chmod(0o600)  # an older file kept its mode
    workers = []
    for index in range(1, count + 1):
        log_path = directory / f"{config.search.study_name}-worker-{index}.log"
        log = log_path.open("a")
        command = [sys.executable, "-m", "slimsearch.search.cli", "worker", str(config_path), "--index", str(index)]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        workers.append(WorkerProcess(index, process, log_path, log))
    return workers


def signal_workers(workers: list[WorkerProcess]) -> None:
    """SIGTERM each live worker: the first makes it stop after its trial, a second aborts it."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)


ABORT_GRACE_S = 30.0
"""How long aborted workers get to record their trials as interrupted before they are killed."""


def join_workers(workers: list[WorkerProcess], stop: threading.Event) -> list[str]:
    """Wait for every worker, forwarding a stop requested meanwhile (``stop`` set by a first
    signal); one line per worker that did not end cleanly. A second signal
    (KeyboardInterrupt) aborts them, kills what is left after :data:`ABORT_GRACE_S`, and
    is re-raised."""
    forwarded = False
    try:
        while any(worker.process.poll() is None for worker in workers):
            if stop.is_set() and not forwarded:
                signal_workers(workers)
                forwarded = True
            time.sleep(0.2)
    except KeyboardInterrupt:
        signal_workers(workers)
        _reap(workers, ABORT_GRACE_S)
        raise
    problems = []
    for worker in workers:
        worker.log.close()
        if worker.process.returncode not in (0, 130):
            problems.append(f"worker {worker.index} exited with code {worker.process.returncode}; see {worker.log_path}")
    return problems


def _reap(workers: list[WorkerProcess], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)  # its own session: the probe goes too
            worker.process.wait()
        worker.log.close()
