"""What a study and its trials store, in one place: the Optuna user-attribute keys and the MLflow record.

The Optuna study is the record of a search; a trial's MLflow child run is derived from
it by :meth:`TrialRecord.mlflow`, whether the trial has just been told or is being
repaired after a crash (a run left RUNNING by a killed process), so the two stores
cannot describe the same trial differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from slimsearch.spaces import Candidate

# Optuna user-attribute keys of the study (set by a run, read by the read commands and deployment).
STUDY_UID = "uid"
"""Ties the study to its MLflow parent run (a study recreated in a lost storage has another)."""
STUDY_OBJECTIVES = "objectives"
STUDY_CONFIG = "config"
"""The latest run's full config: where the stores and outputs are, for select and report."""
STUDY_BASELINE = "baseline"
"""The teacher's measurement (metrics, hardware), taken once per study."""
STUDY_SUPERSEDED_BASELINES = "superseded_baselines"
"""Baselines taken again (calibrated against an earlier reference workload), oldest first."""
STUDY_REFERENCE_POINT = "reference_point"
STUDY_CALIBRATION = "deployment_calibration"
"""The deployment calibration's readings (``search/loop/calibration.py``), in the order taken."""
STUDY_BUDGET = "budget"
"""``[evaluated at the latest run's start, its target]``."""

# Optuna user-attribute keys a trial carries (set by the driver, read by review and deployment).
CANDIDATE = "candidate"
SUMMARY = "summary"
SIMULATED = "simulated"
METRICS = "metrics"
TAGS = "tags"
"""Facts about how the model was built and measured (quant path, noisy, cache hits)."""
ACCURACY_CURVE = "accuracy_curve"
FAILURE_KIND = "failure_kind"
"""rejected | error | interrupted | stale | host | concurrent (another worker measures the same candidate)
| deferred (latency read on a busy host: measured again later) | noisy (still busy after the retries)"""
FAILURE_REASON = "failure_reason"
PRUNED_RULE = "pruned_rule"
PRUNED_REASON = "pruned_reason"
PRUNED_AT = "pruned_at"
MLFLOW_RUN_ID = "mlflow_run_id"
PREDICTED = "predicted"
"""Latency/memory the cost predictor expected before the trial was built (for its error)."""
DUPLICATE_OF = "duplicate_of"
"""A proposal equal to an earlier measured candidate: answered from that trial's record
(the sampler learns the same values), not re-measured, not counted, not on the front."""
WORKER = "worker"
HOST = "host"
PID = "pid"
"""The process running the trial (with ``HOST``): a dead one on this host is seen at once."""
VARIANT_OF = "variant_of"
"""Number of the trial whose trained model this one serves another way, or unpruned (``search.deployment_variants``)."""
DEFERRALS = "deferrals"
"""How many earlier attempts at this candidate had their latency read on a busy host (and were not recorded)."""
EXPLORES = "explores"
"""A random unmeasured candidate, enqueued after this many proposals in a row repeated measured ones."""

RUN_NAME = "mlflow.runName"
"""MLflow's run-name tag: a finished trial's run is named ``#7 w0.5 d2 | prune 0.3 | int8 | ...``,
so the runs table reads as configurations without widening a column."""
KILLED_KINDS = ("interrupted", "stale", "host", "concurrent", "deferred", "noisy")
"""Failures that are the process's or the host's, not the candidate's: their MLflow runs end KILLED."""


def is_duplicate(trial: FrozenTrial) -> bool:
    return DUPLICATE_OF in trial.user_attrs


def has_run(trial: FrozenTrial) -> bool:
    """Whether the trial has an MLflow run of its own: every trial the search decided about
    (measured, stopped, rejected, failed) does; an answer to a repeated proposal, a twin's
    skip and a repeated rejection do not (``ProposalGuard.admit``)."""
    return MLFLOW_RUN_ID in trial.user_attrs


BUDGETED_FAILURES = ("error", "noisy")
"""Failures that used up a trial: the candidate's own error, or a host too busy to time it
after every retry (so a host that stays busy still ends the run)."""


def uses_budget(trial: FrozenTrial) -> bool:
    """A finished trial that counts against the budget: complete, stopped early, or failed by
    an error of the candidate itself. Rejected candidates, answers to repeated proposals,
    deferred measurements, interrupted trials and trials of a dead worker (failed, then
    retried) do not."""
    return (trial.state != TrialState.FAIL or trial.user_attrs.get(FAILURE_KIND) in BUDGETED_FAILURES) \
        and not is_duplicate(trial)


def outcome(trial: FrozenTrial) -> str:
    """How a trial ended, as ``status`` counts it: the state, failures by kind (``FAIL (error)``)."""
    if trial.state != TrialState.FAIL:
        return trial.state.name
    return f"FAIL ({trial.user_attrs.get(FAILURE_KIND, 'stale')})"


@dataclass(frozen=True)
class TrialRecord:
    """One finished (or running) trial as stored in Optuna, typed."""

    trial: FrozenTrial

    @property
    def attrs(self) -> dict[str, Any]:
        return self.trial.user_attrs

    @property
    def candidate(self) -> Candidate | None:
        stored = self.attrs.get(CANDIDATE)
        return Candidate.from_dict(stored) if stored else None

    @property
    def metrics(self) -> dict[str, float]:
        return self.attrs.get(METRICS, {})

    @property
    def feasible(self) -> bool:
        return self.trial.state == TrialState.COMPLETE and all(v <= 0 for v in self.trial.constraints.values())

    def mlflow(self) -> tuple[dict[str, Any], dict[str, float], dict[str, str], str]:
        """``(params, metrics, tags, run status)`` of the trial's MLflow child run. Not its
        ``pareto`` tag: that is the front publishers' (``tracking`` module docstring)."""
        candidate = self.candidate
        params = candidate.flat() if candidate else {}
        named = {"summary": candidate.summary(), RUN_NAME: f"#{self.trial.number} {candidate.summary()}"} \
            if candidate else {}
        if DUPLICATE_OF in self.attrs:
            return params, {}, {"state": "DUPLICATE", "duplicate_of": str(self.attrs[DUPLICATE_OF]),
                                "summary": "", **named}, "FINISHED"
        base = {"state": self.trial.state.name, "feasible": str(self.feasible).lower(), **named}
        for key in (VARIANT_OF, EXPLORES):
            if key in self.attrs:
                base[key] = str(self.attrs[key])
        if self.trial.state == TrialState.COMPLETE:
            return params, self.metrics, {**self.attrs.get(TAGS, {}), **base}, "FINISHED"
        if self.trial.state == TrialState.PRUNED:
            point = self.attrs.get(PRUNED_AT, "")
            metrics = {"metric_at_stop": self.attrs[ACCURACY_CURVE][point]} if point in self.attrs.get(
                ACCURACY_CURVE, {}) else {}
            tags = {**base, "pruned_rule": self.attrs.get(PRUNED_RULE, ""), "pruned_at": point,
                    "pruned_reason": self.attrs.get(PRUNED_REASON, "")}
            return params, metrics, tags, "FINISHED"
        kind = self.attrs.get(FAILURE_KIND, "stale" if self.trial.state == TrialState.FAIL else "")
        tags = {**base, "failure_kind": kind, "failure_reason": self.attrs.get(FAILURE_REASON, "")}
        return params, {}, tags, "KILLED" if kind in KILLED_KINDS else "FAILED"
