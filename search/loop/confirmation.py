"""Confirming the front: its members and the trials within noise of it, re-measured together.

Paired timing takes most of the host's drift out of each trial's latency, but the front
still compares readings taken hours apart, and a point that wins by less than their noise
wins by luck. So when a run ends (and every :data:`CONFIRM_EVERY_S` of a long one, and in
``select`` when the front changed since), the front's members and the trials a member
beats only within noise are re-measured in one sitting: ``evaluation.confirm_passes``
passes over them in alternating order (A B C, then C B A), so a drift across the sitting
weighs on every trial alike, each probe paired with the reference workload and calibrated
to the study's reference as every trial was. The median over the passes is the trial's
confirmed latency; the study stores it (``store.confirmation``) and the front shown,
logged and selected from is computed on it.
"""

from __future__ import annotations

import datetime
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.objectives import LATENCY_P50_MS, OUTSIDE_LOAD_MAX
from slimsearch.evaluators import MeasurementError, Placement, PlacementError, save_artifact
from slimsearch.evaluators.serving import ServingMeasurement
from slimsearch.pipelines import CompressionPipeline
from slimsearch.search.config import EvaluationSettings
from slimsearch.search.loop.trial import Yardstick, latency_metrics, time_serving
from slimsearch.search.store import records
from slimsearch.search.store.confirmation import CONFIRMED_METRICS, save_confirmation, stored_confirmation
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import near_front
from slimsearch.search.store.tracking import MlflowTracker
from slimsearch.spaces import Candidate

MAX_CONFIRMED = 16
"""Trials re-measured in one confirmation: the front first, then the closest within noise."""
CONFIRM_EVERY_S = 3600.0
"""How often a running search confirms its front (and at its end)."""


def trials_to_confirm(front: list[FrozenTrial], complete: list[FrozenTrial], objectives: list[str],
                      directions: list[str], teacher: FrozenTrial | None) -> list[FrozenTrial]:
    """The front's members, then the trials a member beats only within noise, and the
    teacher's own trial (what "vs teacher" compares with), by number."""
    chosen = front[:MAX_CONFIRMED]
    chosen += near_front(complete, front, objectives, directions, MAX_CONFIRMED - len(chosen))
    if teacher is not None and all(t.number != teacher.number for t in chosen):
        chosen.append(teacher)
    return sorted(chosen, key=lambda t: t.number)


def teacher_trial(complete: Iterable[FrozenTrial], baseline: dict[str, Any]) -> FrozenTrial | None:
    """The first complete trial that measured the baseline's candidate (the teacher as served)."""
    return next((t for t in complete if baseline.get("candidate") is not None and not records.is_duplicate(t)
                 and t.user_attrs.get(records.CANDIDATE) == baseline["candidate"]), None)


def confirm(study: optuna.Study, trials: list[FrozenTrial], pipeline: CompressionPipeline,
            evaluation: EvaluationSettings, placement: Placement, workdir: Path, yardstick: Yardstick,
            say: Callable[[str], None], teacher: FrozenTrial | None = None) -> dict[int, dict[str, Any]]:
    """Re-measure ``trials``' latency in ``evaluation.confirm_passes`` interleaved passes,
    store the records in the study and return them ({trial: record})."""
    passes = evaluation.confirm_passes
    say(f"confirming the front: {len(trials)} trials re-measured together in {passes} passes "
        "(Ctrl-C skips it: the front keeps each trial's own reading)")
    example = pipeline.task.serving_batch(evaluation.batch_size)
    built, errors = {}, {}
    for trial in trials:  # from the stage cache: loading and (for int8) calibrating, no training
        candidate = Candidate.from_dict(trial.user_attrs[records.CANDIDATE])
        try:
            built[trial.number] = (candidate, pipeline.build(candidate))
        except Exception as exc:  # noqa: BLE001 -- e.g. a stage cache emptied since: that trial stays unconfirmed
            errors[trial.number] = f"rebuilding failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    readings: dict[int, list[ServingMeasurement]] = defaultdict(list)
    workdir.mkdir(parents=True, exist_ok=True)
    for turn in range(passes):
        for trial in trials if turn % 2 == 0 else trials[::-1]:
            if trial.number in errors:
                continue
            candidate, model = built[trial.number]
            artifact = save_artifact(candidate.runtime, model.serving, example, workdir / f"confirm-{trial.number}")
            try:
                readings[trial.number].append(time_serving(candidate, model, artifact, example, evaluation,
                                                           placement, yardstick))
            except (MeasurementError, PlacementError) as exc:
                errors[trial.number] = str(exc)
            finally:
                artifact.unlink(missing_ok=True)
    confirmed = {trial.number: _record(trial, readings[trial.number], errors.get(trial.number)) for trial in trials}
    save_confirmation(study, confirmed, datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      passes, teacher.number if teacher is not None else None)
    return confirmed


def _record(trial: FrozenTrial, readings: list[ServingMeasurement], error: str | None) -> dict[str, Any]:
    """The median of each latency figure over the passes; clean when every pass was."""
    searched = trial.user_attrs.get(records.METRICS, {})
    record: dict[str, Any] = {"searched_p50_ms": searched.get(LATENCY_P50_MS), "passes": len(readings),
                              "clean": not error and bool(readings) and not any(r.noisy for r in readings)}
    if error:
        record["error"] = error
    if readings:
        figures = [latency_metrics(r) for r in readings]
        record |= {name: statistics.median(f[name] for f in figures) for name in CONFIRMED_METRICS}
        record[OUTSIDE_LOAD_MAX] = max(f[OUTSIDE_LOAD_MAX] for f in figures)
    return record


def describe(confirmed: dict[int, dict[str, Any]]) -> str:
    """One line: how far the confirmation moved the latencies, and what it could not confirm."""
    moved = [abs(r[LATENCY_P50_MS] / r["searched_p50_ms"] - 1) for r in confirmed.values()
             if r["clean"] and r.get("searched_p50_ms")]
    shift = f"latency p50 moved {100 * statistics.median(moved):.1f} % (median), {100 * max(moved):.1f} % (most)" \
        if moved else "nothing re-measured cleanly"
    unconfirmed = sorted(n for n, r in confirmed.items() if not r["clean"])
    return f"front confirmed: {len(confirmed)} trials, {shift}" + (
        f"; not confirmed (host busy or probe failed): trial {', '.join(map(str, unconfirmed))}" if unconfirmed else "")


def unconfirmed_members(study: optuna.Study, front: list[FrozenTrial]) -> list[int]:
    """Front members the latest confirmation did not re-measure (all, if there was none)."""
    _, confirmed = stored_confirmation(study)
    return [t.number for t in front if t.number not in confirmed]


class FrontConfirmer:
    """Confirms a running search's front at its end and every :data:`CONFIRM_EVERY_S`,
    and notes each confirmed trial's reading on its MLflow run."""

    def __init__(self, study: optuna.Study, ledger: StudyLedger, tracker: MlflowTracker,
                 run_id_of: Callable[[FrozenTrial], str | None], pipeline: CompressionPipeline,
                 evaluation: EvaluationSettings, placement: Placement, workdir: Path, yardstick: Yardstick,
                 objectives: dict[str, str], say: Callable[[str], None]):
        self.study, self.ledger, self.tracker, self.run_id_of = study, ledger, tracker, run_id_of
        self.pipeline, self.evaluation, self.placement = pipeline, evaluation, placement
        self.workdir, self.yardstick, self.objectives, self.say = workdir, yardstick, objectives, say
        self._confirmed_at = time.monotonic()

    def due(self) -> bool:
        return bool(self.evaluation.confirm_passes) and time.monotonic() - self._confirmed_at >= CONFIRM_EVERY_S

    def run(self) -> bool:
        """Confirm the current front; False when switched off or the front is empty."""
        self._confirmed_at = time.monotonic()
        if not self.evaluation.confirm_passes:
            return False
        self.ledger.catch_up()
        complete = sorted((t for t in self.ledger.seen_trials.values() if t.state == TrialState.COMPLETE),
                          key=lambda t: t.number)
        teacher = teacher_trial(complete, self.study.user_attrs.get(records.STUDY_BASELINE) or {})
        trials = trials_to_confirm(self.ledger.front_trials(), complete, list(self.objectives),
                                   list(self.objectives.values()), teacher)
        if not trials:
            return False
        confirmed = confirm(self.study, trials, self.pipeline, self.evaluation, self.placement, self.workdir,
                            self.yardstick, self.say, teacher)
        by_number = {t.number: t for t in trials}
        self.tracker.log_confirmation({run_id: record for number, record in confirmed.items()
                                       if (run_id := self.run_id_of(by_number[number]))})
        self.say(describe(confirmed))
        return True
