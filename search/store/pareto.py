"""The current Pareto front and its hypervolume, from Optuna's own utilities.

The front is ``study.best_trials`` (Optuna excludes infeasible trials when constraints
are set). Hypervolume uses ``optuna._hypervolume.compute_hypervolume`` — private in
Optuna 5 but the library's own implementation (the major version is pinned and a test
cross-checks it). Objectives are turned into minimisation (maximised ones negated) and
measured against a reference point fixed once per study, so values are comparable over
the whole run and across resumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.objectives import minimising_signs
from slimsearch.search.store import records

# Reference point = this multiple of the teacher's value for minimised objectives; 0 for
# maximised ones (accuracy). Points outside the box add nothing.
REFERENCE_MULTIPLE = 2.0


@dataclass(frozen=True)
class FrontRow:
    number: int
    summary: str
    values: dict[str, float]
    accuracy_drop: float
    test_accuracy: float
    model_mb: float
    simulated: bool


def reference_point(objectives: dict[str, str], baseline: dict[str, float]) -> list[float]:
    """Reference point in minimisation space, derived from the teacher's measurement."""
    return [-0.0 if sign < 0 else REFERENCE_MULTIPLE * max(baseline[name], 1e-9)
            for name, sign in zip(objectives, minimising_signs(objectives.values()))]


def hypervolume(trials: list[FrozenTrial], directions: list[str], reference: list[float]) -> float:
    """Hypervolume of ``trials``' values (already feasible) w.r.t. ``reference``."""
    if not trials:
        return 0.0
    signs = np.array(minimising_signs(directions))
    points = np.array([t.values for t in trials], dtype=float) * signs
    ref = np.array(reference, dtype=float)
    inside = points[(points < ref).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, ref))


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The measured Pareto front (answers given to repeated proposals are not members)."""
    return sorted((t for t in study.best_trials if records.DUPLICATE_OF not in t.user_attrs), key=lambda t: t.number)


def is_feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def front_rows(study: optuna.Study, objectives: list[str]) -> list[FrontRow]:
    rows = []
    for trial in front_trials(study):
        metrics = trial.user_attrs.get(records.METRICS, {})
        rows.append(
            FrontRow(
                number=trial.number,
                summary=trial.user_attrs.get(records.SUMMARY, ""),
                values=dict(zip(objectives, trial.values)),
                accuracy_drop=metrics.get("accuracy_drop", float("nan")),
                test_accuracy=metrics.get("test_accuracy", float("nan")),
                model_mb=metrics.get("model_mb", float("nan")),
                simulated=bool(trial.user_attrs.get(records.SIMULATED, False)),
            )
        )
    return rows
