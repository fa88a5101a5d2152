from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from slimsearch.search.store.pareto import front_trials, hypervolume, reference_point


def _direct_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Inclusion-exclusion over boxes: exact, exponential, fine for a handful of points."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(ref - corner, 0, None))
    return float(total)


def _study_with(values: list[list[float]], directions: list[str]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for v in values:
        study.add_trial(optuna.trial.create_trial(values=v, params={}, distributions={}))
    return study


def test_hypervolume_matches_a_direct_computation_with_a_maximised_objective() -> None:
    directions = ["maximize", "minimize", "minimize"]
    values = [[0.99, 5.0, 30.0], [0.97, 2.0, 20.0], [0.90, 1.0, 25.0], [0.95, 3.0, 10.0]]
    study = _study_with(values, directions)
    ref = [0.0, 10.0, 40.0]
    expected = _direct_hypervolume(np.array(values) * np.array([-1, 1, 1]), np.array(ref))
    assert hypervolume(front_trials(study), directions, ref) == pytest.approx(expected, rel=1e-9)


def test_points_outside_the_reference_box_add_nothing() -> None:
    directions = ["maximize", "minimize"]
    study = _study_with([[0.9, 1.0], [0.95, 50.0]], directions)
    assert hypervolume(front_trials(study), directions, [0.0, 10.0]) == pytest.approx(0.9 * 9.0)


def test_reference_point_is_derived_from_the_teacher() -> None:
    objectives = {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"}
    assert reference_point(objectives, {"accuracy": 0.99, "latency_p50_ms": 4.0, "memory_mb": 30.0}) == [0.0, 8.0, 60.0]


def test_infeasible_trials_are_not_on_the_front() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, violation in (([0.99, 1.0], 0.5), ([0.9, 2.0], -1.0)):
        study.add_trial(optuna.trial.create_trial(
            values=values, params={}, distributions={}, system_attrs={"constraints": [violation]}))
    assert [t.values for t in front_trials(study)] == [[0.9, 2.0]]


def _measured(study: optuna.Study, accuracy: float, p50: float, memory: float, ci: float, spread: float,
              model_mb: float, val_rows: int = 359) -> None:
    metrics = {"accuracy": accuracy, "latency_p50_ms": p50, "memory_mb": memory, "model_mb": model_mb,
               "latency_p50_ci_low_ms": p50 - ci, "latency_p50_ci_high_ms": p50 + ci, "memory_spread_mb": spread,
               "val_rows": val_rows}
    study.add_trial(optuna.trial.create_trial(values=[accuracy, p50, memory], user_attrs={"metrics": metrics}))


def test_a_point_that_wins_only_within_noise_is_not_a_front_member() -> None:
    from slimsearch.search.store.pareto import noise_aware_front, uncertainty

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"})
    _measured(study, 0.9861, 2.00, 10.0, ci=0.05, spread=0.3, model_mb=0.40)   # 0: the teacher
    _measured(study, 0.9861, 14.0, 9.9, ci=0.40, spread=0.3, model_mb=0.20)    # 1: 7x slower, 0.1 MiB less memory
    _measured(study, 0.9889, 9.00, 12.0, ci=0.30, spread=0.3, model_mb=0.40)   # 2: one validation image better, slower
    _measured(study, 0.9500, 1.00, 6.0, ci=0.05, spread=0.3, model_mb=0.10)    # 3: a real trade-off
    assert {t.number for t in study.best_trials} == {0, 1, 2, 3}, "the raw front keeps all four"
    assert uncertainty(study.trials[2], "accuracy") > 0.0028, "one image of 359 is inside the binomial error"
    members, within = noise_aware_front(study)
    assert {t.number for t in members} == {0, 3}
    assert within == {1: 0, 2: 0}


def test_points_equal_within_noise_keep_the_smaller_model() -> None:
    from slimsearch.search.store.pareto import noise_aware_front

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"})
    _measured(study, 0.97, 3.00, 8.0, ci=0.2, spread=0.2, model_mb=0.4)
    _measured(study, 0.97, 2.95, 8.1, ci=0.2, spread=0.2, model_mb=0.1)
    members, within = noise_aware_front(study)
    assert [t.number for t in members] == [1] and within == {0: 1}


@pytest.mark.parametrize("seed", range(3))
def test_the_incremental_front_equals_optunas_best_trials_with_trials_told_by_another_process(
        tmp_path, seed: int) -> None:
    """Random studies, constraints and repeated proposals included, half the trials told
    through a second handle on the storage (another worker): after every catch-up the
    ledger's front is Optuna's ``best_trials`` minus duplicates."""
    from slimsearch.search.store.ledger import StudyLedger
    from slimsearch.search.store.storage import open_storage

    url = f"sqlite:///{tmp_path / 'o.db'}"
    directions = ["maximize", "minimize", "minimize"]
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=directions)
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    ledger = StudyLedger(study)
    rng = np.random.default_rng(seed)
    for number in range(45):
        handle = other if rng.random() < 0.5 else study
        trial = handle.ask()
        if rng.random() < 0.1:
            handle.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        measured = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if measured and rng.random() < 0.15:  # a repeated proposal: answered with the earlier trial's record
            earlier = measured[int(rng.integers(len(measured)))]
            trial.set_user_attr("duplicate_of", earlier.number)
            violation, values = earlier.constraints["accuracy_drop <= 0.05"], earlier.values
        else:
            violation = float(rng.normal(-0.02, 0.04))
            values = [round(float(v), 1) for v in rng.uniform(0, 1, 3)]  # coarse: ties and equal points occur
        trial.set_constraint("accuracy_drop <= 0.05", violation)
        handle.tell(trial, values)
        if number % 7 == 0 or number == 44:
            ledger.catch_up()
            optunas = sorted(t.number for t in study.best_trials if "duplicate_of" not in t.user_attrs)
            assert [t.number for t in ledger.front_trials()] == optunas
    assert ledger.front, "a front to compare"


def test_a_ledger_for_reading_started_from_an_old_snapshot_equals_a_full_read(tmp_path) -> None:
    """``status`` and ``front`` start from the snapshot a search stored, which may be old (the
    worker that wrote it died): trials running then and trials told since are read and folded,
    so the front, the counts and the running trials equal a read of the whole study."""
    from slimsearch.search.store.ledger import SNAPSHOT_ATTR, StudyLedger
    from slimsearch.search.store.storage import open_storage

    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize", "minimize"])
    rng = np.random.default_rng(3)
    held = []
    for number in range(60):
        trial = study.ask()
        if number == 30:
            writer = StudyLedger(study)
            writer.catch_up()
            study.set_user_attr(SNAPSHOT_ATTR, writer.snapshot())
        if rng.random() < 0.15:
            held.append(trial)  # still running when the snapshot was written, finished (or not) later
            continue
        if rng.random() < 0.1:
            trial.set_user_attr("failure_kind", "error")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_constraint("accuracy_drop <= 0.05", float(rng.normal(-0.02, 0.04)))
        study.tell(trial, [round(float(v), 1) for v in rng.uniform(0, 1, 2)])
    for trial in held[::2]:
        study.tell(trial, [round(float(v), 1) for v in rng.uniform(0, 1, 2)])

    reading, full = StudyLedger.for_reading(study), StudyLedger(study)
    full.catch_up()
    optunas = sorted(t.number for t in study.best_trials)
    assert [t.number for t in reading.front_trials()] == [t.number for t in full.front_trials()] == optunas
    assert (reading.evaluated, reading.outcomes) == (full.evaluated, full.outcomes)
    assert [t.number for t in reading.running()] == [t.number for t in full.running()] == [t.number for t in held[1::2]]
