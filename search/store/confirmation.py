"""The confirmed front: the front as its latest re-measurement in one sitting shows it.

Each trial's latency was timed once, at its own moment of the night, and the front
compares numbers taken hours apart; a point that wins by less than the noise wins by
luck. A confirmation (``search.loop.confirmation``) re-measures the front's members and
the trials within noise of one together, and stores the readings in the study
(:data:`CONFIRMED_ATTR`, one write: a killed confirmation leaves the previous one). The
front shown, logged and selected from is then computed on those readings: each confirmed
trial seen through :func:`confirmed_view` (its latency metrics, objectives and
constraints from the re-measurement), the dominated and the infeasible dropped.

A confirmation that could not be read cleanly (the host was busy) proves nothing: that
trial keeps its search-time numbers (which were clean: noisy ones are never recorded) and
is marked unconfirmed.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY  # private; Optuna's major version is pinned
from optuna.trial import FrozenTrial

from slimsearch.search.objectives import LATENCY_READINGS, Constraint, minimising_signs
from slimsearch.search.store import records
from slimsearch.search.store.ledger import dominates, read_numbers

CONFIRMED_ATTR = "confirmed_front"
"""Study attribute: ``{"at": ISO time, "passes": n, "trials": {number: record}}`` of the latest confirmation."""
CONFIRMATION = "confirmation"
"""User attribute of a confirmed view: the trial's confirmation record."""
CONFIRMED_METRICS = LATENCY_READINGS
"""The metrics a confirmation re-measures (memory and accuracy do not drift with the host)."""


def save_confirmation(study: optuna.Study, confirmed: dict[int, dict[str, Any]], at: str, passes: int,
                      teacher: int | None = None) -> None:
    """Store a confirmation; ``teacher``: the trial of the baseline's candidate, timed in the same sitting."""
    study.set_user_attr(CONFIRMED_ATTR, {"at": at, "passes": passes, "teacher": teacher,
                                         "trials": {str(n): record for n, record in sorted(confirmed.items())}})


def teacher_metrics(study: optuna.Study) -> dict[str, float]:
    """The teacher's figures the front is compared with ("vs teacher"): the baseline's, with
    its latency as the latest confirmation timed it beside the front when it did so cleanly
    (a ratio of two readings from one sitting, not of readings hours apart)."""
    metrics = dict((study.user_attrs.get(records.STUDY_BASELINE) or {}).get("metrics", {}))
    facts, confirmed = stored_confirmation(study)
    if is_clean(record := confirmed.get(facts.get("teacher", -1))):
        metrics |= {name: record[name] for name in CONFIRMED_METRICS if name in record}
    return metrics


def stored_confirmation(study: optuna.Study) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The latest confirmation's facts (``at``, ``passes``; empty if none) and its records by trial."""
    stored = study.user_attrs.get(CONFIRMED_ATTR) or {}
    return ({k: v for k, v in stored.items() if k != "trials"},
            {int(n): record for n, record in stored.get("trials", {}).items()})


def is_clean(record: dict[str, Any] | None) -> bool:
    return bool(record and record.get("clean"))


def confirmation_word(record: dict[str, Any] | None) -> str:
    """``yes`` (re-measured cleanly), ``busy`` (the host was), ``failed`` (the probe was), or
    empty (not re-measured)."""
    if record is None:
        return ""
    return "yes" if is_clean(record) else ("failed" if record.get("error") else "busy")


def confirmed_view(trial: FrozenTrial, record: dict[str, Any], objectives: list[str],
                   constraints: list[Constraint]) -> FrozenTrial:
    """``trial`` with its latency metrics, objective values and constraints taken from a
    clean confirmation (``record`` attached as :data:`CONFIRMATION` either way). A copy:
    the stored trial is not changed."""
    metrics = dict(trial.user_attrs.get(records.METRICS, {}))
    if is_clean(record):
        metrics |= {name: record[name] for name in CONFIRMED_METRICS if name in record}
    violations = trial.constraints | {c.name: c.violation(metrics) for c in constraints if c.metric in metrics}
    view = FrozenTrial(
        number=trial.number, state=trial.state, value=None, datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete, params=trial.params, distributions=trial.distributions,
        user_attrs={**trial.user_attrs, records.METRICS: metrics, CONFIRMATION: record},
        # Optuna keeps a constraint once set: the stored ones are left out and all set anew.
        system_attrs={k: v for k, v in trial.system_attrs.items() if k.split(":")[0] != _CONSTRAINTS_KEY},
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,  # noqa: SLF001 - the view stands for the stored trial
        values=[metrics.get(name, value) for name, value in zip(objectives, trial.values)],
    )
    for name, violation in violations.items():
        view.set_constraint(name, violation)
    return view


def study_constraints(study: optuna.Study) -> list[Constraint]:
    return [Constraint.parse(text) for text in study.user_attrs.get(records.STUDY_CONFIG, {}).get("constraints", [])]


def confirmed_front(study: optuna.Study, front: list[FrozenTrial]) -> list[FrozenTrial]:
    """The front as the latest confirmation shows it: ``front`` and the confirmed trials
    within noise of it, seen through their confirmations, without the infeasible and the
    dominated. ``front`` unchanged when the study was never confirmed."""
    _, confirmed = stored_confirmation(study)
    if not confirmed:
        return front
    objectives = list(study.user_attrs.get(records.STUDY_OBJECTIVES, {}))
    constraints = study_constraints(study)
    known = {t.number: t for t in front}
    known |= read_numbers(study, sorted(set(confirmed) - set(known)))
    views = [confirmed_view(t, confirmed[n], objectives, constraints) if n in confirmed else t
             for n, t in sorted(known.items())]
    feasible = [v for v in views if all(c <= 0 for c in v.constraints.values())]
    signs = minimising_signs(d.name.lower() for d in study.directions)
    points = {v.number: [s * x for s, x in zip(signs, v.values)] for v in feasible}
    return [v for v in feasible if not any(dominates(points[o.number], points[v.number]) for o in feasible)]
