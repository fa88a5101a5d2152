"""The orchestrator's own reads per trial do not grow with the study.

Uses the overhead benchmark's generator (synthetic studies shaped like real ones) and its
stub for building and measuring, so only the driver's bookkeeping runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from optuna.storages._cached_storage import _CachedStorage
from typer.testing import CliRunner

from slimsearch.search.cli import app
from slimsearch.search.loop.trial import run_candidate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import overhead  # noqa: E402 - the benchmark's own generator and stub


class TrialsRead:
    """The trials the storage hands out, with when, while patched in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.reads: list[tuple[float, int]] = []
        get_all, get_one = _CachedStorage.get_all_trials, _CachedStorage.get_trial

        def get_all_trials(storage, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - Optuna's signature
            trials = get_all(storage, *args, **kwargs)
            self.reads.append((time.perf_counter(), len(trials)))
            return trials

        def get_trial(storage, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            self.reads.append((time.perf_counter(), 1))
            return get_one(storage, *args, **kwargs)

        monkeypatch.setattr(_CachedStorage, "get_all_trials", get_all_trials)
        monkeypatch.setattr(_CachedStorage, "get_trial", get_trial)

    def between(self, start: float, end: float) -> int:
        return sum(count for at, count in self.reads if start <= at < end)


def test_the_trials_read_per_proposal_do_not_grow_with_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = overhead.config_for(tmp_path / "out", None, None)
    overhead.drive(config, 2)  # the study, the teacher's baseline (measured for real) and the parent run
    run_ids = overhead.run_pool(config, 4)
    rng = np.random.default_rng(0)
    per_proposal = {}
    for size in (40, 240):
        overhead.grow(config, size, run_ids, rng)
        with monkeypatch.context() as patch:
            spy = TrialsRead(patch)
            asked = overhead.drive(config, 5).asked  # start-up reads the study once, before the first ask
        per_proposal[size] = spy.between(asked[0], asked[-1]) / (len(asked) - 1)
    assert overhead.driver_module.run_candidate is run_candidate, "searches after this one build for real"
    assert per_proposal[240] < 1.5 * per_proposal[40] + 5, per_proposal
    assert per_proposal[240] < 50, f"a proposal reads a handful of trials, not the study: {per_proposal}"

    overhead.grow(config, 260, run_ids, rng)  # told after the search stored its last snapshot
    for command in ("status", "front"):
        with monkeypatch.context() as patch:
            spy = TrialsRead(patch)
            result = CliRunner().invoke(app, [command, str(overhead.write_config(config))])
        assert result.exit_code == 0, result.output
        read = spy.between(0, float("inf"))
        assert read < 100, f"{command} reads the front and the 20 newer trials, not all 260: {read}"


def test_trials_read_in_chunks_are_the_trials_optuna_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two studies in one database (their trial ids interleave), chunks of 3 ids: the chunked
    read returns what ``get_trials`` returns, state filter included, and nothing of the other study."""
    import optuna

    from slimsearch.search.store import storage as storage_module

    monkeypatch.setattr(storage_module, "READ_CHUNK", 3)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    studies = [optuna.create_study(study_name=name, storage=storage_module.open_storage(url)) for name in "ab"]
    for i in range(20):
        study = studies[i % 3 == 0]
        trial = study.ask()
        if i % 4:
            study.tell(trial, float(i))
    for study in studies:
        for states in ((optuna.trial.TrialState.COMPLETE,), (optuna.trial.TrialState.RUNNING,)):
            expected = [(t.number, t.state, t.values) for t in study.get_trials(deepcopy=False, states=states)]
            read = [(t.number, t.state, t.values) for t in storage_module.read_trials(study, states)]
            assert read == expected and expected


def test_trials_are_found_by_number_through_an_index(tmp_path: Path) -> None:
    """The ledger, ``status`` and ``front`` look trials up by number; Optuna's schema would
    scan the study's trials for each (a cost that grows with the study)."""
    import sqlite3

    from slimsearch.search.store.storage import TRIAL_NUMBER_INDEX, open_storage

    open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    plan = sqlite3.connect(tmp_path / "o.db").execute(
        "EXPLAIN QUERY PLAN SELECT trial_id FROM trials WHERE number = 7 AND study_id = 1").fetchall()
    assert TRIAL_NUMBER_INDEX in str(plan), plan


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_s_records_written_together_read_back_as_optuna_s_own_setters_write_them(kind: str,
                                                                                         tmp_path: Path) -> None:
    """``write_trial`` (one transaction on a database, one write each on a journal) leaves
    what ``set_user_attr`` and ``set_constraint`` leave: attributes, constraint values that
    decide feasibility, and the trial's own view of them before it is told."""
    import optuna

    from slimsearch.search.store.storage import open_storage
    from slimsearch.search.store.trial_writes import write_trial

    url = f"sqlite:///{tmp_path / 'o.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'o.log'}"
    study = optuna.create_study(directions=["minimize", "minimize"], storage=open_storage(url))
    for violation in (0.5, -0.5):
        trial = study.ask()
        write_trial(trial, {"metrics": {"a": 1.0}, "summary": "x"}, {"accuracy_drop": violation})
        assert trial.user_attrs["summary"] == "x"
        study.tell(trial, [violation, 1.0])
    stored = study.get_trials(deepcopy=False)
    assert [t.user_attrs for t in stored] == [{"metrics": {"a": 1.0}, "summary": "x"}] * 2
    assert [t.constraints for t in stored] == [{"accuracy_drop": 0.5}, {"accuracy_drop": -0.5}]
    assert [t.number for t in study.best_trials] == [1], "the infeasible trial is not on the front"


def test_held_parameters_read_back_as_sampled_and_an_incompatible_distribution_is_refused(tmp_path: Path) -> None:
    """The held writes check each parameter against the study's first stored distribution
    (remembered per process) as Optuna's own setter does, and upsert attributes in one statement."""
    import optuna

    from slimsearch.search.store.storage import open_storage
    from slimsearch.search.store.trial_writes import write_trial, writes_held

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    for _ in range(2):
        trial = study.ask()
        with writes_held(trial):
            trial.suggest_float("x", 0.0, 1.0)
            trial.suggest_categorical("kind", ["a", "b"])
            trial.set_user_attr("first", 1)
        write_trial(trial, {"first": 2, "second": [1, 2]})
        study.tell(trial, 0.0)
    assert [sorted(t.params) for t in study.trials] == [["kind", "x"]] * 2
    assert [t.user_attrs for t in study.trials] == [{"first": 2, "second": [1, 2]}] * 2
    trial = study.ask()
    with pytest.raises(ValueError, match="different distribution"):
        with writes_held(trial):
            trial.suggest_categorical("x", ["a", "b"])


def test_a_proposal_commits_a_handful_of_database_transactions(tmp_path: Path) -> None:
    """Every Optuna parameter and attribute write was its own commit (fsyncs on SQLite): a
    new trial made 34 commits (reads included). What a step records together is one now (18)."""
    import sqlalchemy

    config = overhead.config_for(tmp_path / "out", None, None)
    overhead.drive(config, 2)  # the study, the teacher's baseline and the parent run
    database = str(config.storage_url).removeprefix("sqlite:///")
    commits: list[float] = []

    def count(connection: sqlalchemy.engine.Connection) -> None:
        if connection.engine.url.database and connection.engine.url.database.endswith(Path(database).name):
            commits.append(time.perf_counter())

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", count)
    try:
        timings = overhead.drive(config, 6)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", count)
    starts = timings.trial_starts
    per_trial = sum(starts[0] <= at < starts[-1] for at in commits) / (len(starts) - 1)
    assert per_trial <= 24, f"{per_trial:.1f} Optuna commits per new trial (34 when each write was its own)"
