"""Waiting out a storage or tracking server that is briefly unreachable.

An overnight study on PostgreSQL meets restarts, fail-overs and network blips; a trial
that has just spent minutes building and measuring a model must not die because the
database was away for 30 seconds. Every call to the Optuna storage and the MLflow
client goes through :class:`Outages`, which retries *transient* errors (the server is
unreachable or dropped the connection; SQLite is locked) with bounded back-off, says so
once per outage, and gives up with one line after ``patience_s``.

Other database errors (a corrupt file, a missing table, bad data) are not retried: they
do not heal by waiting. A write retried after the server committed it but before it
answered can be applied twice; that window is a lost acknowledgement, rarer than the
outages this covers, and the worst case is one extra trial row or tag write.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from typing import Any, Callable, TypeVar

import sqlalchemy
from optuna.storages import BaseStorage

from slimsearch.spaces.errors import SlimsearchError

T = TypeVar("T")

FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 5.0
"""Back-off doubles from the first to the longest wait: a restarted server is noticed within seconds."""
REMIND_EVERY_S = 30.0
DEFAULT_PATIENCE_S = 600.0


class StorageOutage(SlimsearchError, RuntimeError):
    """A storage or tracking server stayed unreachable longer than the configured patience."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the server is unreachable or
    busy, rather than that the request or the data is wrong."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            original = getattr(seen, "orig", None)
            if type(original).__module__.startswith("sqlite3"):  # a missing table is no outage
                return "locked" in str(original)
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, ConnectionError) or type(seen).__name__ == "ConnectionError":  # requests' too
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0][:160] if text else ''}"


class Outages:
    """Shared by every caller of one server in a process (main loop, heartbeat thread), so
    one outage is announced once and every caller waits for the same recovery."""

    def __init__(self, what: str, patience_s: float, announce: Callable[[str], None]):
        self.what = what
        self.patience_s = patience_s
        self.announce = announce
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.reminded_at = 0.0
        self.reconnected_at = 0.0
        """When the last outage ended (0: none yet): silence before it is not a dead worker's."""

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        wait = FIRST_WAIT_S
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failed(exc)
                time.sleep(wait)
                wait = min(2 * wait, LONGEST_WAIT_S)
                continue
            if self.down_since is not None:
                self._recovered()
            return result

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self.lock:
            if self.down_since is None:
                self.down_since = self.reminded_at = now
                self.announce(f"{self.what} unreachable ({_first_line(exc)}); retrying for up to "
                              f"{self.patience_s:.0f} s")
            elif now - self.reminded_at >= REMIND_EVERY_S:
                self.reminded_at = now
                self.announce(f"{self.what} unreachable, retrying ({now - self.down_since:.0f} s)")
            if now - self.down_since > self.patience_s:
                raise StorageOutage(
                    f"{self.what} unreachable for {now - self.down_since:.0f} s ({_first_line(exc)}); start the "
                    "server and run the same command again to resume (or raise search.storage_patience_s)"
                ) from None

    def _recovered(self) -> None:
        with self.lock:
            if self.down_since is None:
                return
            self.announce(f"{self.what} reachable again after {time.monotonic() - self.down_since:.0f} s")
            self.down_since = None
            self.reconnected_at = time.time()


def on_stderr(what: str, patience_s: float = DEFAULT_PATIENCE_S) -> Outages:
    """Outages of ``what`` announced on stderr: for commands without a run's console."""
    return Outages(what, patience_s, lambda line: print(f"warning: {line}", file=sys.stderr, flush=True))


class Retrying:
    """Any client whose method calls go through ``outages`` (the MLflow client)."""

    def __init__(self, target: Any, outages: Outages):
        self._target = target
        self.outages = outages

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._target, name)
        if not callable(member):
            return member
        return functools.partial(self.outages.call, member)


class RetryingStorage(BaseStorage):
    """An Optuna storage whose every call goes through ``outages``; Optuna needs a
    ``BaseStorage`` instance, so its methods are delegated one by one (generated below)."""

    def __init__(self, backend: BaseStorage, outages: Outages):
        self.backend = backend
        self.outages = outages


def _delegated(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.outages.call(getattr(self.backend, name), *args, **kwargs)

    method.__name__ = name
    return method


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(RetryingStorage, _name, _delegated(_name))
RetryingStorage.__abstractmethods__ = frozenset()
