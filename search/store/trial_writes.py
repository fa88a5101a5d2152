"""A trial's records written in one transaction.

Optuna writes every parameter, user attribute and constraint value in its own database
transaction: 3.5-4 ms per write end to end on a SQLite study on this project's 2-core
hosts (50 writes timed; most of it Optuna's per-write ORM work -- a lookup of the trial,
lazy loads -- besides the commit itself). A new trial made 34 commits -- its sampled
parameters (a dozen, one-choice ones included), who runs it, its candidate, metrics,
tags, constraints -- a large share of the driver's own cost per proposal (issue 27). Here what one step records
goes in one transaction: ``writes_held`` holds a trial's writes while it is sampled and
commits them together, ``write_trial`` writes a set of attributes at once. Both write
Optuna's own rows (its ORM models and checks, private in Optuna 5, which is pinned) inside
the storage's outage retries; a conflicting row raises instead of being dropped with the
rest of the transaction. A storage that is not a database (a journal file) is written one call at
a time, as before.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import weakref
from typing import Any, Iterator

import optuna
import psutil
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb.models import TrialModel, TrialParamModel, TrialSystemAttributeModel, TrialUserAttributeModel
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study._tell import _tell_with_warning
from optuna.trial import TrialState
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

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


def tell(study: optuna.Study, trial: optuna.Trial, values: list[float] | None = None,
         state: TrialState | None = None) -> None:
    """``study.tell`` without what it returns: Optuna reads the finished trial back from the
    database and deep-copies it to return it (~3 ms of every proposal), and the driver never
    uses it. The telling itself (checks, state and values, the sampler's ``after_trial``) is
    Optuna's own."""
    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)


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
        """Everything held, in one transaction: the trial looked up once, each parameter's
        distribution checked against the study's (:func:`_study_distribution`), the
        attributes of each kind upserted in one statement. Optuna's own row writers look
        the trial up again for every row (two queries a row): a proposal's dozen rows took
        ~11 ms of a 75 ms proposal at 10,000 trials (issue 27)."""
        if not (self.params or self.user or self.system):
            return
        with _create_scoped_session(database.scoped_session) as session:
            trial = TrialModel.find_or_raise_by_id(self.trial_id, session)
            database.check_trial_is_updatable(self.trial_id, trial.state)
            for name, (value, distribution) in self.params.items():
                stored = _study_distribution(database, session, trial.study_id, name)
                if stored is not None:
                    check_distribution_compatibility(stored, distribution)
                session.add(TrialParamModel(trial_id=self.trial_id, param_name=name, param_value=value,
                                            distribution_json=distribution_to_json(distribution)))
            for model, values in ((TrialUserAttributeModel, self.user), (TrialSystemAttributeModel, self.system)):
                _upsert(database, session, model, self.trial_id, values)


_STUDY_DISTRIBUTIONS: weakref.WeakKeyDictionary[RDBStorage, dict[tuple[int, str], BaseDistribution]] = \
    weakref.WeakKeyDictionary()
"""Per storage, (study, parameter) -> the distribution the study first stored for it. A
study's parameter keeps its distribution (Optuna refuses an incompatible one), so a storage
asks its database once per parameter, where Optuna's writer asks for every row it writes."""


def _study_distribution(database: RDBStorage, session: Session, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution ``study_id`` stores for parameter ``name`` (None: no trial has it yet)."""
    known = _STUDY_DISTRIBUTIONS.setdefault(database, {})
    if (study_id, name) not in known:
        first = (session.query(TrialParamModel.distribution_json).join(TrialModel)
                 .filter(TrialModel.study_id == study_id, TrialParamModel.param_name == name).first())
        if first is None:
            return None
        known[study_id, name] = json_to_distribution(first[0])
    return known[study_id, name]


def _upsert(database: RDBStorage, session: Session, model: type[TrialUserAttributeModel | TrialSystemAttributeModel],
            trial_id: int, values: dict[str, Any]) -> None:
    """Set ``values`` as attributes of the trial: one statement on SQLite and PostgreSQL
    (the ``INSERT ... ON CONFLICT DO UPDATE`` Optuna issues per key), Optuna's writer per key elsewhere."""
    if not values:
        return
    dialects = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}
    old_sqlite = database.engine.name == "sqlite" and sqlite3.sqlite_version_info < (3, 24, 0)  # no upsert yet
    if database.engine.name not in dialects or old_sqlite:
        for key, value in values.items():
            database._set_trial_attr_without_commit(session, model, trial_id, key, value)  # noqa: SLF001
        return
    insert = dialects[database.engine.name](model).values(
        [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in values.items()])
    session.execute(insert.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                                 set_={"value_json": insert.excluded.value_json}))
