"""`select` logic on a fixed, recorded study (no building, no measuring)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from slimsearch.search.review.study_review import StudyReview, knee_trial, objective_bounds
from slimsearch.search.objectives import Constraint
from slimsearch.search.review.selection import Limits, select

OBJECTIVES = {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"}
TEACHER_ACCURACY = 0.99
# number: (accuracy, p50, p95, memory, simulated)
RECORDED = {
    0: (0.990, 8.0, 9.0, 30.0, False),   # the teacher
    1: (0.985, 3.0, 3.4, 18.0, False),
    2: (0.982, 1.8, 2.6, 16.0, False),
    3: (0.975, 1.2, 1.5, 15.0, False),
    4: (0.988, 1.0, 1.1, 12.0, True),    # simulated: looks best, is not deployable
    5: (0.950, 0.9, 1.0, 14.0, False),
}


@pytest.fixture(scope="module")
def review() -> StudyReview:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=list(OBJECTIVES.values()), study_name="recorded")
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("baseline", {"metrics": {"accuracy": TEACHER_ACCURACY}, "hardware": {}})
    study.set_user_attr("config", {"constraints": ["accuracy_drop <= 0.05"]})
    for number, (acc, p50, p95, mem, simulated) in RECORDED.items():
        metrics = {"accuracy": acc, "latency_p50_ms": p50, "latency_p95_ms": p95, "memory_mb": mem,
                   "accuracy_drop": TEACHER_ACCURACY - acc}
        study.add_trial(optuna.trial.create_trial(
            values=[acc, p50, mem], params={"n": number}, distributions={"n": CategoricalDistribution(list(RECORDED))},
            user_attrs={"metrics": metrics, "simulated": simulated, "summary": f"candidate {number}"},
        ))
    return StudyReview(study)


@pytest.mark.parametrize(
    ("limits", "prefer", "expected"),
    [
        (Limits(max_latency_ms=2.0), "accuracy", 3),
        (Limits(max_latency_ms=3.0), "accuracy", 2),
        (Limits(max_drop=0.006), "latency", 1),
        (Limits(max_drop=0.01, max_memory_mb=17.0), "memory", 2),
        (Limits(), "latency", 5),
        (Limits(), "accuracy", 0),
        (Limits(max_drop=0.02), "memory", 3),
    ],
)
def test_select_picks_the_right_candidate(review: StudyReview, limits: Limits, prefer: str, expected: int) -> None:
    assert select(review, limits, prefer).chosen.number == expected


def test_simulated_candidates_are_excluded_unless_allowed(review: StudyReview) -> None:
    plain = select(review, Limits(max_latency_ms=1.2), "accuracy")
    assert plain.chosen.number == 5
    assert "simulated" in " ".join(plain.excluded[4])
    assert select(review, Limits(max_latency_ms=1.2), "accuracy", allow_simulated=True).chosen.number == 4


def test_every_exclusion_says_which_limit_and_by_how_much(review: StudyReview) -> None:
    selection = select(review, Limits(max_latency_ms=2.0, max_memory_mb=16.0), "knee")
    assert selection.excluded[0] == ["latency_p95_ms 9 > 2 (--max-latency-ms)", "memory_mb 30 > 16 (--max-memory-mb)"]


def test_impossible_limits_choose_nothing_and_rank_the_closest(review: StudyReview) -> None:
    selection = select(review, Limits(max_latency_ms=0.5, max_drop=0.001), "knee")
    assert selection.chosen is None and not selection.eligible
    assert [t.number for t in selection.closest] == [1, 2, 3], "ranked by relative overshoot, simulated left out"


def test_knee_is_the_balanced_point(review: StudyReview) -> None:
    knee = knee_trial([t for t in review.complete if t.number in (0, 2, 5)], list(OBJECTIVES.values()))
    assert knee.number == 2


def test_accuracy_drop_constraint_becomes_an_accuracy_bound(review: StudyReview) -> None:
    bounds = objective_bounds([Constraint.parse("accuracy_drop <= 0.05"), Constraint.parse("memory_mb <= 20")],
                              list(OBJECTIVES), {"accuracy": 0.99})
    assert bounds == {"accuracy": pytest.approx(0.94), "memory_mb": 20.0}


def test_report_contains_plot_table_and_knee(review: StudyReview) -> None:
    page = review.html()
    assert 'id="pareto-plot"' in page and "id='front-table'" in page
    assert "class='knee'" in page and "Plotly.newPlot" in page
    assert '<script src="https://cdn.plot.ly' not in page, "plotly.js must be embedded for offline review"


def test_the_report_leaves_out_importance_of_an_objective_that_never_varied() -> None:
    """fANOVA raises on a constant objective (a model that always predicts one class gives the
    same accuracy in every trial): the report must still be written, without that objective."""
    study = optuna.create_study(directions=list(OBJECTIVES.values()), study_name="flat")
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("baseline", {"metrics": {"accuracy": 0.5}, "hardware": {}})
    study.set_user_attr("config", {"constraints": []})
    for number, (_, p50, _, mem, _) in RECORDED.items():
        study.add_trial(optuna.trial.create_trial(
            values=[0.5, p50, mem], params={"n": number}, distributions={"n": CategoricalDistribution(list(RECORDED))},
            user_attrs={"metrics": {"accuracy": 0.5, "accuracy_drop": 0.0}, "simulated": False, "summary": f"c{number}"},
        ))
    review = StudyReview(study)
    assert set(review.importances()) == {"latency_p50_ms", "memory_mb"}
    assert "flat" in review.html()
