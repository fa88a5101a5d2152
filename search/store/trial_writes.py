"""A trial's records written in one transaction.

Optuna writes every parameter, user attribute and constraint value in its own database
transaction: 3.5-4 ms per write end to end on a SQLite study on this project's 2-core
hosts (50 writes timed; most of it Optuna's per-write ORM work -- a lookup of the trial,
lazy loads -- besides the commit itself). A new trial made 34 commits -- its sampled
parameters (a dozen, one-choice ones included), who runs it, its candidate, metrics,
tags, constraints -- a large share of the driver's own cost per proposal (issue 27). Here what one step records
goes in one transaction: ``writes_held`` holds a trial's writes while it is sampled and
commits them together, ``write_trial`` writes a set of attributes at once. Both use
Optuna's own row writers (private in Optuna 5, which is pinned) inside the storage's
outage retries; a conflicting row raises instead of being dropped with the rest of the
transaction. A storage that is not a database (a journal file) is written one call at
a time, as before.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Iterator

import optuna
import psutil
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb.models import TrialSystemAttributeModel, TrialUserAttributeModel
from optuna.storages._rdb.storage import _create_scoped_session

from slimsearch.search.store import records
from slimsearch.search.store.storage import database_of


def write_trial(trial: optuna.Trial, attrs: dict[str, Any], constraints: dict[str, float] | None = None) -> None:
    """Set ``attrs`` as user attributes and ``constraints`` as Optuna constraint values of a
    running trial, with Optuna's own setters, in one transaction."""
    with writes_held(trial):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for name, value in (constraints or {}).items():
            trial.set_constraint(name, value)


def owner_attrs() -> dict[str, Any]:
    """Which process runs a trial, so a storage without heartbeats can tell whether it is
    still alive."""
    return {records.HOST: socket.gethostname(), records.PID: psutil.Process().pid}


@contextlib.contextmanager
def writes_held(trial: optuna.Trial) -> Iterator[None]:
    """Hold the parameters and attributes ``trial`` writes in the block (sampling included)
    and commit them in one transaction when it ends -- also when it raises, so a proposal
    that fails half-way keeps what it wrote, as before. Other processes see them at the
    end of the block: end it before anything they must see (a long build) starts. Inside
    another such block it adds to that one's transaction."""
    database = database_of(trial.storage)
    if database is None:
        yield
        return
    storage, held = trial.storage, _HeldWrites(trial.storage, trial._trial_id)  # noqa: SLF001
    trial.storage = held  # what Trial's own setters write through
    try:
        yield
    finally:
        trial.storage = storage
        storage.outages.call(held.commit, database)  # type: ignore[attr-defined] - a RetryingStorage (database_of)


class _HeldWrites:
    """A trial's storage inside ``writes_held``: that trial's writes are kept (and read back
    where Optuna reads them), every other call goes to the storage."""

    def __init__(self, storage: BaseStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.params: dict[str, tuple[float, BaseDistribution]] = {}
        self.user: dict[str, Any] = {}
        self.system: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: BaseDistribution) -> None:
        if trial_id != self.trial_id:
            return self.storage.set_trial_param(trial_id, name, value, distribution)
        self.params[name] = (value, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id != self.trial_id:
            return self.storage.set_trial_user_attr(trial_id, key, value)
        self.user[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id != self.trial_id:
            return self.storage.set_trial_system_attr(trial_id, key, value)
        self.system[key] = value

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        stored = self.storage.get_trial_system_attrs(trial_id)
        return {**stored, **self.system} if trial_id == self.trial_id else stored

    def commit(self, database: RDBStorage) -> None:
        """Everything held, in one transaction. Optuna checks each parameter's distribution
        against the study's, as its own setter does -- but by a query for the parameter's
        first row in the study, where Optuna's cache in front of the database would have
        remembered it: cheap for parameters every trial has, a longer scan for a rare
        conditional one (not measured to grow at 1,000 trials; watch it at 10,000)."""
        if not (self.params or self.user or self.system):
            return
        with _create_scoped_session(database.scoped_session) as session:
            for name, (value, distribution) in self.params.items():
                database._set_trial_param_without_commit(session, self.trial_id, name, value, distribution)  # noqa: SLF001
            for model, values in ((TrialUserAttributeModel, self.user), (TrialSystemAttributeModel, self.system)):
                for key, value in values.items():
                    database._set_trial_attr_without_commit(session, model, self.trial_id, key, value)  # noqa: SLF001
