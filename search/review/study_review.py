"""A study as the morning review sees it: front, knee point, bounds, and the HTML report.

Everything here reads the Optuna study alone (objectives, baseline and config are stored
in its user attributes), so the report can be rebuilt from storage on any machine.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.dashboards import (
    PlotPoint,
    ReportRow,
    importance_figure,
    objectives_3d,
    parallel_coordinates,
    pareto_figure,
    report_html,
)
from slimsearch.search.objectives import (
    LATENCY_P95_MS,
    MACS,
    MODEL_MB,
    PARAMS,
    Constraint,
    QualityMetric,
    minimising_signs,
)
from slimsearch.search.store.confirmation import confirmed_view, stored_confirmation
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import is_feasible, noise_aware_front
from slimsearch.search.store.storage import read_trials
from slimsearch.search.store import records

MIN_TRIALS_FOR_IMPORTANCE = 5
IMPORTANCE_TRIALS = 300
"""fANOVA sees a seeded sample of at most this many complete trials: its forests cost grows
with the trials (28 s for 1,000), and a sample of the study shows what mattered as well."""
IMPORTANCE_TREES = 16
"""Trees per fANOVA forest (Optuna's default is 64): a quarter of the report's cost, and the
ranking of a handful of parameters does not need more."""


def knee_trial(trials: list[FrozenTrial], directions: list[str]) -> FrozenTrial | None:
    """The trial closest to the ideal point after min-max scaling each objective (best = 0)."""
    if not trials:
        return None
    values = np.array([t.values for t in trials], dtype=float) * np.array(minimising_signs(directions))
    span = values.max(axis=0) - values.min(axis=0)
    scaled = (values - values.min(axis=0)) / np.where(span > 0, span, 1.0)
    return trials[int(np.argmin(np.linalg.norm(scaled, axis=1)))]


def objective_bounds(constraints: list[Constraint], objectives: list[str], baseline: dict[str, float],
                     quality: QualityMetric = QualityMetric()) -> dict[str, float]:
    """Constraint bounds expressed on objective axes (``accuracy_drop <= d`` -> accuracy >=
    teacher - d; for a minimised metric, ``mae_drop <= d`` -> mae <= teacher + d)."""
    bounds = {}
    for constraint in constraints:
        if constraint.metric in objectives:
            bounds[constraint.metric] = constraint.bound
        elif constraint.metric == quality.drop and quality.name in objectives and quality.name in baseline:
            bounds[quality.name] = quality.score(quality.score(baseline[quality.name]) - constraint.bound)
    return bounds


class StudyReview:
    """Read-only view of one study for plots, tables and selection."""

    def __init__(self, study: optuna.Study, ledger: StudyLedger | None = None):
        """``ledger``: a running search's own (its trials are already in memory); a read
        command reads the front from the stored snapshot and the complete trials in chunks."""
        self.study = study
        self.objectives: dict[str, str] = dict(study.user_attrs.get(records.STUDY_OBJECTIVES, {}))
        self.baseline: dict[str, Any] = study.user_attrs.get(records.STUDY_BASELINE) or {"metrics": {}, "hardware": {}}
        self.config: dict[str, Any] = study.user_attrs.get(records.STUDY_CONFIG, {})
        self.quality = QualityMetric.of(study.user_attrs)
        self.ledger = ledger or StudyLedger.for_reading(study)
        told = [t for t in self.ledger.seen_trials.values() if t.state == TrialState.COMPLETE] if ledger \
            else read_trials(study, (TrialState.COMPLETE,))
        _, confirmed = stored_confirmation(study)
        constraints = self.constraints
        self.complete = sorted((confirmed_view(t, confirmed[t.number], list(self.objectives), constraints)
                                if t.number in confirmed else t
                                for t in told if all(math.isfinite(v) for v in t.values)), key=lambda t: t.number)
        """Every complete trial, seen through its latest confirmation where it has one."""
        self.front, self.within_noise = noise_aware_front(study, self.ledger.front_trials())
        """Front members, and ``{trial: member}`` for points that win only within measurement noise."""
        self.knee = knee_trial(self.front, list(self.objectives.values()))

    @property
    def constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.config.get("constraints", [])]

    def plot_points(self) -> list[PlotPoint]:
        on_front = {t.number for t in self.front}
        return [
            PlotPoint(
                number=t.number,
                values=dict(zip(self.objectives, t.values)),
                status="front" if t.number in on_front else ("dominated" if is_feasible(t) else "infeasible"),
                simulated=bool(t.user_attrs.get(records.SIMULATED)),
                label=t.user_attrs.get(records.SUMMARY, ""),
                knee=self.knee is not None and t.number == self.knee.number,
            )
            for t in self.complete
        ]

    def report_rows(self) -> list[ReportRow]:
        rows = []
        for trial in self.front:
            metrics = trial.user_attrs.get(records.METRICS, {})
            cells: dict[str, str | float] = {"trial": float(trial.number), "configuration": trial.user_attrs.get(records.SUMMARY, "")}
            cells.update({name: float(value) for name, value in zip(self.objectives, trial.values)})
            for extra in (self.quality.drop, self.quality.test, LATENCY_P95_MS, MODEL_MB, PARAMS, MACS):
                if extra in metrics and extra not in cells:
                    cells[extra] = float(metrics[extra])
            cells["quant path"] = trial.user_attrs.get(records.TAGS, {}).get("quant_path", "")
            rows.append(ReportRow(cells, knee=trial is self.knee, simulated=bool(trial.user_attrs.get(records.SIMULATED))))
        return rows

    def facts(self) -> list[str]:
        hardware = self.baseline.get("hardware", {})
        teacher = self.baseline.get("metrics", {})
        shown = ", ".join(f"{k} {teacher[k]:.4g}" for k in (*self.objectives, MODEL_MB) if k in teacher)
        return [
            f"task {self.config.get('task', '?')} · {len(self.complete)} completed trials of {self.ledger.trial_count()} · "
            f"front {len(self.front)}" + (f" (+{len(self.within_noise)} within measurement noise of a member: "
                                          + ", ".join(f"trial {a} of {b}" for a, b in sorted(self.within_noise.items()))
                                          + ")" if self.within_noise else ""),
            f"teacher baseline: {shown}",
            f"constraints: {'; '.join(self.config.get('constraints', [])) or 'none'}",
            f"hardware: {hardware.get('cpu', '?')} ({hardware.get('cores', '?')} cores), torch {hardware.get('torch', '?')}",
        ]

    def parameter_rows(self) -> list[dict[str, float | str]]:
        """Searched parameters (resolved, so conditional ones always have a value) + objectives."""
        rows = []
        for trial in self.complete:
            candidate = trial.user_attrs.get(records.CANDIDATE)
            if not candidate:
                continue
            student = candidate["student"]
            row: dict[str, float | str] = {
                "architecture": f"w{student['width']:g} d{student['depth']}" if student else "teacher",
                "prune ratio": float(candidate["prune_ratio"]),
                "bits": f"{candidate['bits']}" + (" (sim)" if candidate["bits"] < 8 else ""),
                "serving": f"{candidate['strategy']} x{candidate['degree']}",
                "threads": float(candidate["threads"]),
            }
            row.update({name: float(value) for name, value in zip(self.objectives, trial.values)})
            rows.append(row)
        return rows

    def importances(self) -> dict[str, dict[str, float]]:
        """Optuna's fANOVA importance per objective (seeded: unseeded runs disagreed with the
        data). An objective that did not vary over the trials (every accuracy equal, say) has
        no importance to show; fANOVA raises for it, so it is left out rather than failing the report."""
        if len(self.complete) < MIN_TRIALS_FOR_IMPORTANCE:
            return {}
        # scikit-learn's forests (150 MB): loaded after the trials are read, not beside them.
        from optuna.importance import FanovaImportanceEvaluator

        sample = self.complete
        if len(sample) > IMPORTANCE_TRIALS:
            sample = random.Random(0).sample(sample, IMPORTANCE_TRIALS)
        sampled = optuna.create_study(directions=self.study.directions)
        sampled.add_trials(sample)
        found = {}
        for i, name in enumerate(self.objectives):
            if len({t.values[i] for t in sample}) < 2:
                continue
            found[name] = dict(optuna.importance.get_param_importances(
                sampled, evaluator=FanovaImportanceEvaluator(n_trees=IMPORTANCE_TREES, seed=0), target=lambda t, i=i: t.values[i]))
        return found

    def html(self) -> str:
        points = self.plot_points()
        bounds = objective_bounds(self.constraints, list(self.objectives), self.baseline.get("metrics", {}), self.quality)
        title = f"slimsearch study {self.study.study_name}"
        pareto = pareto_figure(points, self.objectives, "Pareto front (every objective pair)", bounds) if points else None
        more = []
        if len(self.objectives) == 3 and points:
            more.append(objectives_3d(points, self.objectives))
        if rows := self.parameter_rows():
            more.append(parallel_coordinates(rows, color_by=next(iter(self.objectives))))
        if importances := self.importances():
            more.append(importance_figure(importances, min(len(self.complete), IMPORTANCE_TRIALS), len(self.complete)))
        return report_html(title, self.facts(), pareto, self.report_rows(), more)
