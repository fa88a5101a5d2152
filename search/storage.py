"""Where a study lives: an Optuna storage opened from one URL.

- ``sqlite:///path`` (default): one host; writers wait for each other (60 s) instead of
  failing with "database is locked", and a fresh database is created under a file lock
  (two processes creating it at once crash one of them).
- ``postgresql://user@host/db`` (or ``mysql://``): many hosts; ``slimsearch worker`` on
  each joins the same study.
- ``journal:///path``: Optuna's append-only journal file (one host or a shared file
  system; cheaper per trial than SQLite). It records no heartbeats, so trials of a dead
  worker are found by their recorded host and process id instead.

With a heartbeat interval, RDB trials record heartbeats, and a trial whose worker died
(silent for 3 heartbeats) is failed and its parameters re-enqueued once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import warnings
from pathlib import Path
from typing import Iterator

import optuna
import psutil
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

JOURNAL_SCHEME = "journal:///"
RETRIES_OF_A_DEAD_WORKER_S_TRIAL = 1


def open_storage(url: str, heartbeat_s: int | None = None) -> BaseStorage:
    """The storage behind ``url``; with ``heartbeat_s``, stale trials are detectable."""
    if url.startswith(JOURNAL_SCHEME):
        path = Path(url.removeprefix(JOURNAL_SCHEME))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with _creation_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat API
        heartbeat = {} if heartbeat_s is None else {
            "heartbeat_interval": heartbeat_s,
            "grace_period": 3 * heartbeat_s,
            "heartbeat_stale_trial_callback": _retry_once(),
        }
        return RDBStorage(url, engine_kwargs=engine, **heartbeat)


def _retry_once() -> RetryHeartbeatStaleTrialCallback:
    return RetryHeartbeatStaleTrialCallback(max_retry=RETRIES_OF_A_DEAD_WORKER_S_TRIAL)


def records_heartbeats(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.heartbeat_interval is not None


def mark_trial_owner(trial: optuna.Trial) -> None:
    """Record which process runs the trial, so a storage without heartbeats can tell
    whether it is still alive."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", psutil.Process().pid)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials of dead workers and re-enqueue their parameters once:
    by heartbeat on RDB storages, by (host, pid) on this host for the journal file."""
    storage = study._storage  # noqa: SLF001 - Optuna's own fail_stale_trials reads it the same way
    if records_heartbeats(storage):
        optuna.storages.fail_stale_trials(study)
        return
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or psutil.pid_exists(pid):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was quicker
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):  # noqa: SLF001
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    _retry_once()(study, storage.get_trial(trial._trial_id))  # noqa: SLF001


@contextlib.contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """Two processes initialising a fresh SQLite database at once crash one of them
    ("UNIQUE constraint failed: alembic_version"); slimsearch processes take turns."""
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


class Heartbeats:
    """Records the heartbeat of every trial this process runs, from one background thread.

    Optuna's own heartbeat thread only runs inside ``study.optimize``, not with ask/tell
    or with trials running on a Ray cluster. If this process dies, the silence lets other
    workers (or the next run) fail its trials and re-run their parameters. Storages
    without heartbeats (the journal file) rely on the trial's recorded process instead.
    """

    def __init__(self, study: optuna.Study, interval_s: int):
        self.storage = study._storage  # noqa: SLF001 - the storage open_study configured
        self.interval_s = interval_s
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial: optuna.Trial) -> None:
        if not records_heartbeats(self.storage):
            return
        self.storage.record_heartbeat(trial._trial_id)  # noqa: SLF001 - no public accessor; optimize() uses it
        with self.lock:
            self.trial_ids.add(trial._trial_id)  # noqa: SLF001
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, name="heartbeats", daemon=True)
                self.thread.start()

    def remove(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.trial_ids.discard(trial._trial_id)  # noqa: SLF001

    @contextlib.contextmanager
    def beating(self, trial: optuna.Trial) -> Iterator[None]:
        self.add(trial)
        try:
            yield
        finally:
            self.remove(trial)

    def close(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.interval_s):
            with self.lock:
                trial_ids = list(self.trial_ids)
            for trial_id in trial_ids:
                self.storage.record_heartbeat(trial_id)
