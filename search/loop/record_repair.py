"""Keeping the two stores in step after crashes and lost stores.

The Optuna study is the record of a search and every MLflow run is derived from it
(``records.TrialRecord.mlflow``), so whatever a crash or a lost store left behind is
repaired from the study: trials of workers that died are failed (and re-run once), runs a
killed process left RUNNING are ended, a lost or emptied MLflow store is rebuilt. The one
thing that cannot be repaired -- an Optuna study that is not the one MLflow recorded (its
storage was lost or replaced) -- is refused before anything is written.
"""

from __future__ import annotations

import math
import time

import optuna
from optuna.trial import TrialState
from rich.console import Console

from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.store import records
from slimsearch.search.store.storage import fail_stale_trials
from slimsearch.search.store.study import StudyMismatch
from slimsearch.search.store.tracking import MlflowTracker, readable_tracking, recorded_study

REBUILT_RUNS = "mlflow_rebuilt_runs"
"""Study attribute: trial number -> its MLflow run written again after the tracking store was lost."""


def check_tracking_matches(study: optuna.Study, config: SlimsearchConfig) -> None:
    """Refuse to mix a study into the MLflow parent run of another one of the same name:
    an Optuna storage that was lost, truncated or switched starts a new, empty study,
    and continuing would bury the earlier trials (and crash on their params)."""
    with readable_tracking(config.tracking_uri):
        recorded = recorded_study(config.tracking_uri, config.tracking.experiment, config.search.study_name)
    if recorded is None:
        return
    parent, uid, children = recorded
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if (uid is not None and uid != study.user_attrs[records.STUDY_UID]) or (uid is None and children and not finished):
        raise StudyMismatch(
            f"MLflow parent run {parent} records {children} trials of study '{config.search.study_name}', but the "
            f"study in {redact_url(config.storage_url)} is another one ({len(finished)} finished trials): its Optuna "
            "storage was lost or replaced. Restore that storage (search.storage), or use a new search.study_name")


class RecordRepair:
    """Repairs of one study's records, done by the process that runs it."""

    def __init__(self, study: optuna.Study, tracker: MlflowTracker, config: SlimsearchConfig, console: Console):
        self.study, self.tracker, self.config, self.console = study, tracker, config, console
        self.rebuilt_runs = {int(k): v for k, v in study.user_attrs.get(REBUILT_RUNS, {}).items()}
        """Trial number -> its run written again after the tracking store was lost."""
        self._stale_checked_at = -math.inf

    def run_id_of(self, trial: optuna.trial.FrozenTrial) -> str | None:
        """The trial's MLflow run: the rebuilt one if its store was lost, else the one it recorded."""
        return self.rebuilt_runs.get(trial.number) or trial.user_attrs.get(records.MLFLOW_RUN_ID)

    def fail_stale_trials(self) -> None:
        """Fail the trials of workers that stopped sending heartbeats (their parameters are
        re-enqueued once) and end their MLflow runs as KILLED, never left RUNNING."""
        # A trial is stale after SILENT_HEARTBEATS silent intervals: looking more than once an
        # interval finds nothing sooner, and each look reads every running trial.
        if time.monotonic() - self._stale_checked_at < self.config.search.heartbeat_s:
            return
        self._stale_checked_at = time.monotonic()
        failed = set(fail_stale_trials(self.study, self.config.search.heartbeat_s))
        if not failed:  # the common case: no scan of the study's failed trials
            return
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.number in failed:
                if run_id := self.run_id_of(trial):
                    self.tracker.finish_trial(run_id, *records.TrialRecord(trial).mlflow())
                self.console.print(f"trial {trial.number:>4}  [yellow]failed[/]: {trial.user_attrs[records.FAILURE_REASON]}")

    def rebuild_lost_store(self) -> str:
        """A study with finished trials but no parent run in the tracking store lost that store
        (deleted, emptied, or another URI): every finished trial's run is written again from
        its record. Returns the start-up line."""
        if not self.tracker.created_parent:
            return ""
        finished = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]
        if not finished:
            return ""
        lost = [t for t in finished if records.has_run(t)]  # an answered repeat had none: it gets none
        self.rebuilt_runs = {}
        for trial in lost:
            run_id = self.tracker.start_trial(trial.number)
            self.tracker.finish_trial(run_id, *records.TrialRecord(trial).mlflow())
            self.rebuilt_runs[trial.number] = run_id
        # A finished trial's own attributes cannot change: later runs find its new run here.
        self.study.set_user_attr(REBUILT_RUNS, {str(k): v for k, v in self.rebuilt_runs.items()})
        return (f"the MLflow store had no record of study '{self.config.search.study_name}' ({len(finished)} finished "
                f"trials): rebuilt its parent and trial runs from the Optuna study")

    def end_orphaned_runs(self) -> str:
        """End the MLflow runs a killed process left RUNNING for trials Optuna has finished
        (killed between telling Optuna and ending the run); returns the start-up line."""
        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        repaired = 0
        for run_id, number in self.tracker.running_trial_runs():
            if (trial := by_number.get(number)) is not None:
                self.tracker.finish_trial(run_id, *records.TrialRecord(trial).mlflow())
                repaired += 1
        return f"repaired {repaired} MLflow run(s) left RUNNING by a killed process" if repaired else ""
