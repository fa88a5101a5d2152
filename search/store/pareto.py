"""The current Pareto front and its hypervolume, from Optuna's own utilities.

The front is Optuna's ``best_trials`` (infeasible trials excluded when constraints are
set) without the answers to repeated proposals, kept by :class:`~.ledger.StudyLedger`
(a running search keeps its ledger; a read command starts from the snapshot it stored). Hypervolume uses ``optuna._hypervolume.compute_hypervolume`` — private in
Optuna 5 but the library's own implementation (the major version is pinned and a test
cross-checks it). Objectives are turned into minimisation (maximised ones negated) and
measured against a reference point fixed once per study, so values are comparable over
the whole run and across resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.objectives import (
    ACCURACY_METRIC,
    LATENCY_CI_MS,
    MEMORY_MB,
    MEMORY_SPREAD_MB,
    MODEL_MB,
    VAL_ROWS,
    QualityMetric,
    minimising_signs,
)
from slimsearch.search.store import records
from slimsearch.search.store.confirmation import CONFIRMATION, confirmation_word, confirmed_front
from slimsearch.search.store.ledger import StudyLedger

# Reference point = this multiple of the teacher's value for minimised objectives; 0 for
# maximised ones (accuracy). Points outside the box add nothing.
REFERENCE_MULTIPLE = 2.0


@dataclass(frozen=True)
class FrontRow:
    number: int
    summary: str
    values: dict[str, float]
    quality_drop: float
    """How much worse than the teacher on the task's metric (``<metric>_drop``)."""
    test_quality: float
    """The task's metric on the test split (``test_<metric>``)."""
    model_mb: float
    simulated: bool
    within_noise_of: int | None = None
    """Set for a point that wins only within measurement noise of that front member."""
    confirmed: str = ""
    """``yes``: latency re-measured with the front (these are those numbers); ``busy`` or
    ``failed``: the re-measurement was not clean (search-time numbers); empty: not yet."""


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
    return StudyLedger.for_reading(study).front_trials()


def uncertainty(trial: FrozenTrial, objective: str) -> float:
    """How far ``objective``'s measured value can move between two measurements of the same
    candidate, from what the trial recorded: the binomial standard error of an accuracy on the
    validation rows, the half-width of the bootstrap 95 % interval of a latency percentile,
    the spread of the per-round memory peaks. 0 where nothing was recorded (older trials,
    exact quantities such as model size)."""
    m = trial.user_attrs.get(records.METRICS, {})
    if objective in (ACCURACY_METRIC.name, ACCURACY_METRIC.test) and m.get(VAL_ROWS):
        p = m[objective]
        return math.sqrt(max(p * (1 - p), 0.0) / m[VAL_ROWS])
    if objective in LATENCY_CI_MS:
        low, high = LATENCY_CI_MS[objective]
        return max(0.0, m.get(high, 0.0) - m.get(low, 0.0)) / 2
    if objective == MEMORY_MB:
        return m.get(MEMORY_SPREAD_MB, 0.0)
    return 0.0


def _margins(a: FrozenTrial, b: FrozenTrial, objectives: list[str], signs: list[float]) -> list[float]:
    """How much better ``a`` is than ``b`` per objective, in units of their combined noise (>1: beyond)."""
    return [sign * (vb - va) / max(uncertainty(a, o) + uncertainty(b, o), 1e-12)
            for va, vb, sign, o in zip(a.values, b.values, signs, objectives)]


def within_noise(front: list[FrozenTrial], objectives: list[str], directions: list[str]) -> dict[int, int]:
    """``{trial: the front member it is within noise of}`` for front members that win only
    inside measurement noise.

    ``a`` is within noise of ``b`` when every objective on which ``a`` beats ``b`` beats it by
    no more than the two measurements' combined uncertainty, and ``b`` beats ``a`` beyond
    noise somewhere -- or nowhere, and ``b`` is the smaller model (the simpler of two points
    equal within noise stays). Larger models are judged first, so a chain keeps the simplest.
    """
    signs = minimising_signs(directions)
    size = {t.number: t.user_attrs.get(records.METRICS, {}).get(MODEL_MB, 0.0) for t in front}
    dropped: dict[int, int] = {}
    for a in sorted(front, key=lambda t: (-size[t.number], -t.number)):
        for b in front:
            if b.number == a.number or b.number in dropped:
                continue
            ahead = _margins(a, b, objectives, signs)
            if any(m > 1 for m in ahead):
                continue  # a wins somewhere beyond noise: a real trade-off
            if any(m < -1 for m in ahead) or (size[b.number], b.number) < (size[a.number], a.number):
                dropped[a.number] = b.number
                break
    return dropped


def near_front(trials: list[FrozenTrial], front: list[FrozenTrial], objectives: list[str], directions: list[str],
               limit: int) -> list[FrozenTrial]:
    """Feasible trials off the front that a front member beats only within noise on every
    objective (a re-measurement could put them on it), closest first, at most ``limit``."""
    signs = minimising_signs(directions)
    members = {t.number for t in front}
    close: list[tuple[float, int, FrozenTrial]] = []
    for trial in trials:
        if trial.number in members or not is_feasible(trial):
            continue
        behind = [min(_margins(member, trial, objectives, signs)) for member in front
                  if max(_margins(member, trial, objectives, signs)) <= 1]
        if behind:
            close.append((-max(behind), trial.number, trial))
    return [trial for _, _, trial in sorted(close, key=lambda c: (c[0], c[1]))[:limit]]


def noise_aware_front(study: optuna.Study, front: list[FrozenTrial] | None = None
                      ) -> tuple[list[FrozenTrial], dict[int, int]]:
    """The front (``front``: already known) as the latest confirmation shows it, without the
    members that win only within noise, and those members' pairing."""
    members, within, _ = _noise_aware(study, front)
    return members, within


def _noise_aware(study: optuna.Study, front: list[FrozenTrial] | None
                 ) -> tuple[list[FrozenTrial], dict[int, int], list[FrozenTrial]]:
    """Members, ``{point: member}`` pairing, and the points within noise of a member."""
    front = confirmed_front(study, front_trials(study) if front is None else front)
    objectives = list(study.user_attrs.get(records.STUDY_OBJECTIVES, {})) or [f"objective {i}" for i in range(len(study.directions))]
    dropped = within_noise(front, objectives, [d.name.lower() for d in study.directions])
    return ([t for t in front if t.number not in dropped], dropped, [t for t in front if t.number in dropped])


NEAR_FRONT = "near-front"
"""The ``pareto`` tag of a trial that beats a front member only within measurement noise."""


def pareto_tag(number: int, members: list[FrozenTrial], within: dict[int, int]) -> str:
    """The ``pareto`` tag of a trial: ``true``, ``near-front`` (within measurement noise of a
    member) or ``false``; in that order when sorted descending, as the trials view lists them."""
    if number in within:
        return NEAR_FRONT
    return "true" if any(t.number == number for t in members) else "false"


def is_feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def front_rows(study: optuna.Study, objectives: list[str], front: list[FrozenTrial] | None = None) -> list[FrontRow]:
    """The noise-aware front, then the points within noise of a member (marked as such)."""
    members, within, dropped = _noise_aware(study, front)
    quality = QualityMetric.of(study.user_attrs)
    rows = []
    for trial in members + dropped:
        metrics = trial.user_attrs.get(records.METRICS, {})
        rows.append(
            FrontRow(
                number=trial.number,
                summary=trial.user_attrs.get(records.SUMMARY, ""),
                values=dict(zip(objectives, trial.values)),
                quality_drop=metrics.get(quality.drop, float("nan")),
                test_quality=metrics.get(quality.test, float("nan")),
                model_mb=metrics.get(MODEL_MB, float("nan")),
                simulated=bool(trial.user_attrs.get(records.SIMULATED, False)),
                within_noise_of=within.get(trial.number),
                confirmed=confirmation_word(trial.user_attrs.get(CONFIRMATION)),
            )
        )
    return rows

