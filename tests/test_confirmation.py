"""The confirmed front: the front shown and selected from is computed on the re-measurement."""

from __future__ import annotations

import optuna
import pytest

from slimsearch.search.objectives import Constraint
from slimsearch.search.review.selection import Limits, select
from slimsearch.search.review.study_review import StudyReview
from slimsearch.search.store.confirmation import save_confirmation
from slimsearch.search.store.pareto import front_rows, near_front, noise_aware_front

OBJECTIVES = {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"}


def _study(constraints: tuple[str, ...] | list[str] = ("accuracy_drop <= 0.05",)) -> optuna.Study:
    study = optuna.create_study(directions=list(OBJECTIVES.values()))
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("config", {"constraints": list(constraints)})
    return study


def _measured(study: optuna.Study, accuracy: float, p50: float, memory: float, ci: float = 0.02) -> None:
    metrics = {"accuracy": accuracy, "accuracy_drop": 0.99 - accuracy, "latency_p50_ms": p50,
               "latency_p95_ms": 1.2 * p50, "memory_mb": memory, "model_mb": memory / 10,
               "latency_p50_ci_low_ms": p50 - ci, "latency_p50_ci_high_ms": p50 + ci, "memory_spread_mb": 0.1,
               "val_rows": 359}
    trial = optuna.trial.create_trial(values=[accuracy, p50, memory],
                                      user_attrs={"metrics": metrics, "summary": f"p50 {p50}"})
    for text in study.user_attrs["config"]["constraints"]:  # as the driver tells them: by name
        trial.set_constraint(text, Constraint.parse(text).violation(metrics))
    study.add_trial(trial)


def _confirmed(p50: float, clean: bool = True) -> dict:
    return {"clean": clean, "passes": 2, "latency_p50_ms": p50, "latency_p95_ms": 1.2 * p50,
            "latency_p50_ci_low_ms": p50 - 0.02, "latency_p50_ci_high_ms": p50 + 0.02}


def test_a_member_whose_re_measurement_is_dominated_leaves_the_front() -> None:
    study = _study()
    _measured(study, 0.98, 2.0, 10.0)   # 0: fast by its own reading
    _measured(study, 0.98, 2.3, 10.0)   # 1: dominated by 0 as searched
    _measured(study, 0.95, 1.0, 6.0)    # 2: a real trade-off
    assert {t.number for t in noise_aware_front(study)[0]} == {0, 2}
    save_confirmation(study, {0: _confirmed(2.6), 1: _confirmed(2.25), 2: _confirmed(1.01)}, "now", 2)

    members, _ = noise_aware_front(study)
    assert {t.number for t in members} == {1, 2}, "0's edge was the host's: re-measured together, 1 is faster"
    assert {t.number: t.values[1] for t in members} == {1: 2.25, 2: 1.01}
    rows = front_rows(study, list(OBJECTIVES))
    assert [(r.number, r.values["latency_p50_ms"], r.confirmed) for r in rows] == [(1, 2.25, "yes"), (2, 1.01, "yes")]
    assert study.trials[0].values[1] == 2.0, "the stored trial keeps what the search measured"


def test_select_checks_limits_against_the_confirmed_latency() -> None:
    study = _study()
    _measured(study, 0.98, 2.0, 10.0)
    save_confirmation(study, {0: _confirmed(3.0)}, "now", 2)
    selection = select(StudyReview(study), Limits(max_latency_ms=3.0))  # limits are on p95: 1.2 x p50
    assert selection.chosen is None
    assert selection.excluded[0] == ["latency_p95_ms 3.6 > 3 (--max-latency-ms)"]


def test_a_busy_re_measurement_keeps_the_searched_numbers_and_says_so() -> None:
    study = _study()
    _measured(study, 0.98, 2.0, 10.0)
    save_confirmation(study, {0: {**_confirmed(9.0, clean=False)}}, "now", 2)
    (row,) = front_rows(study, list(OBJECTIVES))
    assert row.values["latency_p50_ms"] == 2.0 and row.confirmed == "busy"


def test_trials_within_noise_of_the_front_are_confirmed_with_it() -> None:
    study = _study()
    _measured(study, 0.98, 2.00, 10.0)           # 0: front
    _measured(study, 0.98, 2.01, 10.0)           # 1: behind 0 by less than the noise
    _measured(study, 0.98, 4.00, 10.0)           # 2: behind beyond noise
    _measured(study, 0.90, 2.01, 10.0)           # 3: infeasible (drop 0.09 > 0.05)
    front = noise_aware_front(study)[0]
    close = near_front(study.trials, front, list(OBJECTIVES), list(OBJECTIVES.values()), limit=5)
    assert [t.number for t in close] == [1]
    assert near_front(study.trials, front, list(OBJECTIVES), list(OBJECTIVES.values()), limit=0) == []


@pytest.mark.parametrize("searched", [2.0, 2.6])
def test_a_confirmation_does_not_change_a_front_it_agrees_with(searched: float) -> None:
    study = _study()
    _measured(study, 0.98, searched, 10.0)
    _measured(study, 0.95, 1.0, 6.0)
    before = {t.number for t in noise_aware_front(study)[0]}
    save_confirmation(study, {0: _confirmed(searched), 1: _confirmed(1.0)}, "now", 2)
    assert {t.number for t in noise_aware_front(study)[0]} == before == {0, 1}


def test_a_latency_constraint_is_judged_on_the_confirmed_latency() -> None:
    study = _study(["accuracy_drop <= 0.05", "latency_p95_ms <= 3"])
    _measured(study, 0.98, 2.0, 10.0)   # p95 2.4: feasible as searched
    _measured(study, 0.95, 1.0, 6.0)
    save_confirmation(study, {0: _confirmed(3.0), 1: _confirmed(1.0)}, "now", 2)
    assert {t.number for t in noise_aware_front(study)[0]} == {1}, "re-measured at p95 3.6, trial 0 breaks the limit"
    (view,) = [t for t in StudyReview(study).complete if t.number == 0]
    assert view.constraints["latency_p95_ms <= 3"] == pytest.approx(0.6)
    assert view.constraints["accuracy_drop <= 0.05"] == pytest.approx(-0.04)


def test_vs_teacher_uses_the_teacher_timed_in_the_same_sitting_as_the_front() -> None:
    from slimsearch.search.loop.confirmation import teacher_trial, trials_to_confirm
    from slimsearch.search.store.confirmation import teacher_metrics

    study = _study()
    _measured(study, 0.99, 5.0, 16.0)   # 0: the teacher, ahead of 1 only within noise
    _measured(study, 0.98, 2.0, 10.0)
    study.set_user_attr("baseline", {"metrics": {"latency_p50_ms": 4.4, "model_mb": 1.6}})
    assert teacher_trial(study.trials, study.user_attrs["baseline"]) is None, "no candidate stored: no teacher trial"
    front = noise_aware_front(study)[0]
    assert [t.number for t in front] == [1]
    chosen = trials_to_confirm(front, study.trials, list(OBJECTIVES), list(OBJECTIVES.values()), study.trials[0])
    assert [t.number for t in chosen] == [0, 1], "the teacher's trial is timed with the front"
    assert teacher_metrics(study)["latency_p50_ms"] == 4.4, "not confirmed yet: the baseline's reading"
    save_confirmation(study, {0: _confirmed(5.1), 1: _confirmed(2.0)}, "now", 2, teacher=0)
    assert teacher_metrics(study) == {"latency_p50_ms": 5.1, "model_mb": 1.6, "latency_p95_ms": pytest.approx(6.12),
                                      "latency_p50_ci_low_ms": pytest.approx(5.08),
                                      "latency_p50_ci_high_ms": pytest.approx(5.12)}
    save_confirmation(study, {0: _confirmed(9.0, clean=False)}, "now", 2, teacher=0)
    assert teacher_metrics(study)["latency_p50_ms"] == 4.4, "a busy re-measurement of the teacher proves nothing"
