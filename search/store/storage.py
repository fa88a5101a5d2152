"""Where a study lives: an Optuna storage opened from one URL.

- ``sqlite:///path`` (default): one host; writers wait for each other (60 s) instead of
  failing with "database is locked", and a fresh database is created under a file lock
  (two processes creating it at once crash one of them).
- ``postgresql://user@host/db`` (or ``mysql://``): many hosts; ``slimsearch worker`` on
  each joins the same study.
- ``journal:///path``: Optuna's append-only journal file (one host or a shared file
  system; cheaper per trial than SQLite).

Every running trial records a heartbeat (a trial system attribute, the same on every
storage: Optuna's own heartbeat table exists only for RDB storages, and its stale check
ignores trials that never beat). A running trial silent for the grace period (3
heartbeats) -- or, before its first beat, that long after it started -- belongs to a
dead worker wherever that worker ran; on this host a dead recorded process id tells at
once. Such a trial is failed and its parameters re-enqueued once.

Database storages are reached through :mod:`outages`: a server that is briefly away is
waited out, and silence that fell while this process itself could not reach the server
is not counted against other workers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Iterator

import optuna
import psutil
import sqlalchemy
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb.models import TrialModel
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.store import records
from slimsearch.search.store.outages import Outages, RetryingStorage, on_stderr

JOURNAL_SCHEME = "journal:///"
RETRIES_OF_A_DEAD_WORKER_S_TRIAL = 1
HEARTBEAT_ATTR = "slimsearch:heartbeat"
STALE_REASON = "its worker stopped (no heartbeat, or its process is gone); the parameters were re-enqueued"
SILENT_HEARTBEATS = 3
"""A trial silent for this many heartbeat intervals belongs to a dead worker."""


CONNECT_TIMEOUT_S = 10
"""How long a database or tracking server may take to answer the reachability check."""
TRIAL_NUMBER_INDEX = "slimsearch_ix_trials_study_number"
READ_CHUNK = 1000
"""Trial ids per query of :func:`read_trials`."""


def unreachable(url: str) -> str | None:
    """Why the server behind a storage or tracking ``url`` does not answer within
    :data:`CONNECT_TIMEOUT_S`, or ``None``: checked before anything trains, so a typo or a
    stopped server is one line in seconds, not a traceback after the teacher's training.
    Local SQLite files and journals are created on first use and not checked."""
    if url.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {str(exc).strip()[:160]}"
        return None
    if not url.startswith(("postgresql", "mysql")):
        return None
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            return None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:160]
        return f"{type(exc).__name__}: {first}"
    finally:
        engine.dispose()


def open_storage(url: str, outages: Outages | None = None) -> BaseStorage:
    """The storage behind ``url``; a database's calls wait out its outages (announced on
    stderr unless the caller's ``outages`` say where)."""
    outages = outages or on_stderr("the Optuna storage")
    if url.startswith(JOURNAL_SCHEME):
        path = Path(url.removeprefix(JOURNAL_SCHEME))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    # A server restart leaves dead connections in the pool: test each before use.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with _creation_lock(url):
        rdb = outages.call(RDBStorage, url, engine_kwargs=engine)
        _index_trial_numbers(rdb)
    # The cache Optuna itself puts in front of an RDBStorage opened from a URL, kept behind the retries.
    return RetryingStorage(_CachedStorage(rdb), outages)


def database_of(storage: BaseStorage) -> RDBStorage | None:
    """The database behind a storage ``open_storage`` built, or ``None`` (a journal, or a
    storage built elsewhere)."""
    cached = storage.backend if isinstance(storage, RetryingStorage) else None
    if isinstance(cached, _CachedStorage) and isinstance(cached._backend, RDBStorage):  # noqa: SLF001
        return cached._backend  # noqa: SLF001
    return None


def read_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """``study.get_trials(deepcopy=False, states=states)``, read from a database 1,000 trial ids
    at a time: Optuna reads a study in one query whose row objects, for a 10,000-trial study,
    take about 300 MB at once -- more than a read command (``report``, ``select``) may use.
    Uses Optuna's own trial reader (private in Optuna 5, pinned); a journal is read whole."""
    storage = study._storage  # noqa: SLF001 - the storage open_storage built
    rdb, study_id = database_of(storage), study._study_id  # noqa: SLF001
    if rdb is None:
        return study.get_trials(deepcopy=False, states=states)
    with _create_scoped_session(rdb.scoped_session) as session:
        first, last = session.query(sqlalchemy.func.min(TrialModel.trial_id), sqlalchemy.func.max(TrialModel.trial_id)) \
            .filter(TrialModel.study_id == study_id).one()
    trials: list[FrozenTrial] = []
    for low in range(first or 0, (last or -1) + 1, READ_CHUNK):
        # Optuna's filter is "id in the chunk, or id > last": exactly the chunk.
        chunk = set(range(low, min(low + READ_CHUNK, last + 1)))
        trials += storage.outages.call(rdb._get_trials, study_id, states, chunk, last)  # noqa: SLF001
    return trials


def _index_trial_numbers(rdb: RDBStorage) -> None:
    """Index trials by (study, number). Optuna finds a trial by its number with a scan of
    the study's trials (its schema indexes the study only): 2.7 ms a lookup at 10,000
    trials, 0.6 ms with the index -- and the ledger, ``status`` and ``front`` look trials up
    by number. An index changes no data and Optuna's migrations leave it alone; a storage
    that cannot take it (read-only, MySQL's syntax) is read without it."""
    with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), rdb.engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE INDEX IF NOT EXISTS {TRIAL_NUMBER_INDEX} ON trials (study_id, number)"))


def reconnected_at(storage: BaseStorage) -> float:
    """When this process last got the storage back after an outage (0: never lost it)."""
    return storage.outages.reconnected_at if isinstance(storage, RetryingStorage) else 0.0


def stale_trials(study: optuna.Study, heartbeat_s: float, now: float | None = None,
                 running: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Running trials whose worker is gone: silent for ``SILENT_HEARTBEATS`` intervals (before
    the first beat, counted from the trial's start), or owned by a dead process on this host.
    ``running``: the running trials, where the caller has them (reading them otherwise reads
    the whole study once)."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    stale = []
    heard_since = reconnected_at(study._storage)  # noqa: SLF001 - while cut off, this process heard nobody
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        silent_s = now - max(float(trial.system_attrs.get(HEARTBEAT_ATTR, started)), heard_since)
        pid = trial.user_attrs.get(records.PID)
        dead_here = trial.user_attrs.get(records.HOST) == host and pid is not None and not psutil.pid_exists(pid)
        if dead_here or silent_s > SILENT_HEARTBEATS * heartbeat_s:
            stale.append(trial)
    return stale


def fail_stale_trials(study: optuna.Study, heartbeat_s: float) -> list[int]:
    """Fail the running trials of dead workers and re-enqueue their parameters once; returns
    the numbers of the trials this call failed (another worker may have been quicker)."""
    storage = study._storage  # noqa: SLF001 - Optuna's own fail_stale_trials reads it the same way
    failed = []
    for trial in stale_trials(study, heartbeat_s):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was quicker
            # Before FAIL: a finished trial's attributes are read-only.
            storage.set_trial_user_attr(trial._trial_id, records.FAILURE_KIND, "stale")  # noqa: SLF001
            storage.set_trial_user_attr(trial._trial_id, records.FAILURE_REASON, STALE_REASON)  # noqa: SLF001
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):  # noqa: SLF001
                rerun_once(study, storage.get_trial(trial._trial_id))  # noqa: SLF001
                failed.append(trial.number)
    return failed


def rerun_once(study: optuna.Study, failed: FrozenTrial) -> None:
    """Enqueue the parameters of a trial its worker could not finish, unless that trial was
    itself such a re-run: a candidate that kills every worker it meets is not re-run for ever."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=RETRIES_OF_A_DEAD_WORKER_S_TRIAL)(study, failed)


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
    workers (or the next run) fail its trials and re-run their parameters.
    """

    def __init__(self, study: optuna.Study, interval_s: int):
        self.storage = study._storage  # noqa: SLF001 - the storage open_study configured
        self.interval_s = interval_s
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, trial: optuna.Trial) -> None:
        """Beat for ``trial`` from the thread's next beat on (within ``interval_s``). Not at
        once: most proposals late in a study are repeats answered in milliseconds, and the
        write was ~2.5 ms of each (issue 27); until its first beat a trial's silence counts
        from its start (:func:`stale_trials`), well inside ``SILENT_HEARTBEATS`` intervals."""
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
                try:
                    self._record(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile
                    pass
                except Exception:  # noqa: BLE001 - the thread must outlive any one failed write
                    # An outage past its patience: the main loop stops the run with one line;
                    # until then beating goes on at the next interval.
                    logging.getLogger(__name__).exception("heartbeat of trial id %s not recorded", trial_id)

    def _record(self, trial_id: int) -> None:
        self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
