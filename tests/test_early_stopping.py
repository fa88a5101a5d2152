"""Multi-objective early stopping: the rules on a small real study, and in a real search."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from slimsearch.search.config import EarlyStoppingSettings
from slimsearch.search.loop.early_stopping import EarlyStopping, TrialMonitor, TrialStopped, required_score
from slimsearch.search.objectives import Constraint, QualityMetric
from slimsearch.search.store.pareto import front_trials
from slimsearch.spaces import Candidate, StudentChoice
from tests.conftest import write_config
from tests.helpers import cli_text, run_cli, stores

OBJECTIVES = {"accuracy": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"}
SMALL = Candidate(StudentChoice(0.5, 2, 2.0, 0.5), 0.0, 8, None, "single", 1, 1)
OTHER_KD = Candidate(StudentChoice(0.5, 2, 4.0, 0.0), 0.0, 8, None, "single", 1, 1)  # same serving structure
WIDER = Candidate(StudentChoice(1.0, 2, 2.0, 0.5), 0.0, 8, None, "single", 1, 1)


def _study(completed: list[tuple[Candidate, list[float], dict[str, float]]]) -> optuna.Study:
    study = optuna.create_study(directions=list(OBJECTIVES.values()))
    for number, (candidate, values, curve) in enumerate(completed):
        study.add_trial(optuna.trial.create_trial(
            values=values, params={"x": float(number)}, distributions={"x": FloatDistribution(0, 100)},
            user_attrs={"candidate": candidate.to_dict(), "accuracy_curve": curve, "metrics": {"accuracy": values[0]}},
        ))
    return study


def _monitor(rules: EarlyStopping, completed: list[tuple[Candidate, list[float], dict[str, float]]],
             candidate: Candidate) -> TrialMonitor:
    """The monitor a search would give ``candidate`` after the ``completed`` trials."""
    study = _study(completed)
    for trial in study.trials:
        rules.learn(trial)
    return rules.for_trial(front_trials(study), candidate)


def _rules(min_history: int = 2, slack: float = 0.0) -> EarlyStopping:
    constraints = [Constraint.parse("accuracy_drop <= 0.05")]
    return EarlyStopping(EarlyStoppingSettings(min_history=min_history, slack=slack), OBJECTIVES, constraints,
                         QualityMetric(), 0.95)


def test_required_accuracy_is_the_tightest_accuracy_bound() -> None:
    constraints = [Constraint.parse("accuracy_drop <= 0.05"), Constraint.parse("accuracy >= 0.92"),
                   Constraint.parse("latency_p50_ms <= 3")]
    assert required_score(constraints, QualityMetric(), 0.95) == pytest.approx(0.92)
    assert required_score(constraints[2:], QualityMetric(), 0.95) is None


def test_a_minimised_metric_is_required_below_the_teacher_plus_its_drop_and_stopped_above() -> None:
    mae = QualityMetric("mae", "minimize")
    constraints = [Constraint.parse("mae_drop <= 5"), Constraint.parse("mae <= 52")]
    assert required_score(constraints, mae, 50.0) == pytest.approx(-52.0), "mae <= min(50 + 5, 52)"
    objectives = {"mae": "minimize", "latency_p50_ms": "minimize"}
    rules = EarlyStopping(EarlyStoppingSettings(min_history=1), objectives, constraints, mae, 50.0)
    _monitor(rules, [], SMALL)("serving", 51.0)  # within both bounds: goes on
    with pytest.raises(TrialStopped, match="mae 53.0000 at serving can reach at best 53.0000, the constraints need <= 52"):
        _monitor(rules, [], SMALL)("serving", 53.0)


def test_epoch_points_need_history_but_the_serving_accuracy_is_exact() -> None:
    monitor = _monitor(_rules(min_history=2), [], SMALL)
    monitor("distill 1/2", 0.10)  # no history: nothing is stopped mid-training
    with pytest.raises(TrialStopped) as stopped:
        monitor("serving", 0.89)
    assert stopped.value.rule == "accuracy-constraint" and "need >= 0.9000" in str(stopped.value)
    assert monitor.curve == {"distill 1/2": 0.10, "serving": 0.89}


def test_optimistic_accuracy_adds_the_largest_gain_seen_after_the_same_epoch() -> None:
    history = [(WIDER, [0.95, 5.0, 10.0], {"distill 1/2": 0.80}), (WIDER, [0.93, 5.0, 10.0], {"distill 1/2": 0.88})]
    _monitor(_rules(min_history=2, slack=0.01), history, SMALL)("distill 1/2", 0.745)  # 0.745 + 0.15 + 0.01 >= 0.90
    with pytest.raises(TrialStopped, match="at best 0.8950"):
        _monitor(_rules(min_history=2, slack=0.01), history, SMALL)("distill 1/2", 0.735)
    _monitor(_rules(min_history=3), history, SMALL)("distill 1/2", 0.10)  # too little history


def test_a_best_case_dominated_by_the_front_is_stopped_only_when_its_speed_is_known() -> None:
    history = [(SMALL, [0.97, 2.0, 6.0], {})]
    with pytest.raises(TrialStopped) as stopped:
        _monitor(_rules(), history, OTHER_KD)("serving", 0.96)  # same structure: same speed, less accurate
    assert stopped.value.rule == "dominated"
    _monitor(_rules(), history, OTHER_KD)("serving", 0.98)  # more accurate: may join the front
    _monitor(_rules(), history, WIDER)("serving", 0.96)  # speed unknown: cannot judge


@pytest.mark.e2e
def test_stopped_trials_are_pruned_in_both_stores_and_use_budget(tmp_path: Path, fast_config: dict) -> None:
    fast_config["constraints"] = ["accuracy_drop <= 0"]  # only candidates as accurate as the teacher may finish
    fast_config["search"].update(n_trials=5, study_name="stopping", sampler="random")
    fast_config["space"]["student"]["width"] = [0.5]
    output = run_cli(write_config(tmp_path / "stopping.yaml", **fast_config))
    study, _, children, _ = stores(Path(fast_config["output_dir"]), "stopping")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, output
    assert all(t.user_attrs["pruned_rule"] in ("accuracy-constraint", "dominated") for t in pruned)
    counted = [t for t in study.trials if (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or t.user_attrs.get("failure_kind") == "error") and "duplicate_of" not in t.user_attrs]
    assert len(counted) == 5, [(t.number, t.state, t.user_attrs.get("duplicate_of")) for t in study.trials]
    runs = {int(r.data.tags["trial_number"]): r for r in children}
    for trial in pruned:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "PRUNED"
        assert run.data.tags["pruned_rule"] == trial.user_attrs["pruned_rule"]
        assert "metric_at_stop" in run.data.metrics
    assert "stopped early" in cli_text(output)


def toy_structure(candidate: Candidate) -> tuple[float, float]:
    """MACs and parameters as a pipeline would estimate them: work in width x depth x kept channels."""
    width, depth = (candidate.student.width, candidate.student.depth) if candidate.student else (1.0, 3)
    kept = 1 - candidate.prune_ratio
    return 1e6 * width * depth * kept, 1e5 * width * kept


def test_the_cost_predictor_learns_a_synthetic_cost_model_and_reports_out_of_sample_error() -> None:
    """Latency proportional to the work left after pruning, halved by a second thread: after
    enough trials the error of predictions made before each measurement falls below 10 %."""
    import random

    from slimsearch.search.loop.predictor import CostPredictor

    rng = random.Random(0)
    predictor = CostPredictor(toy_structure)
    assert predictor.predict(Candidate(None, 0.0, 32, None, "single", 1, 1)) is None, "untrained"
    for _ in range(36):
        candidate = Candidate(StudentChoice(rng.choice([0.25, 0.5, 1.0]), rng.choice([2, 3]), 4.0, 0.5),
                              rng.choice([0.0, 0.3, 0.6]), rng.choice([32, 8]), None, "single", 1, rng.choice([1, 2]))
        s = candidate.student
        latency = 10 * s.width * s.depth * (1 - candidate.prune_ratio) / candidate.threads * (0.5 if candidate.bits == 8 else 1)
        metrics = {"latency_p50_ms": latency, "memory_mb": 5 + 20 * s.width * (1 - candidate.prune_ratio)}
        predictor.learn(candidate, metrics, predictor.predict(candidate))
    mape = predictor.mape()
    assert set(mape) == {"latency_p50_ms", "memory_mb"}
    assert mape["latency_p50_ms"] < 10 and mape["memory_mb"] < 10, mape
    assert "predictor MAPE latency" in predictor.describe()


def test_the_cost_predictor_learns_that_threads_and_int8_pay_differently_per_runtime() -> None:
    """As measured on the digits table: a second thread or int8 halves torch's latency but
    barely moves onnxruntime's. With one slope per feature shared by the runtimes the
    median error after 28 trials (5 orders) was 10.2 %; with a slope per runtime, 2.7 %."""
    import random
    import statistics

    from slimsearch.search.loop.predictor import CostPredictor

    errors = []
    for seed in range(5):
        rng, predictor = random.Random(seed), CostPredictor(toy_structure)
        for _ in range(28):
            runtime = rng.choice(["torch", "onnxruntime"])
            candidate = Candidate(StudentChoice(rng.choice([0.25, 0.5, 1.0]), rng.choice([2, 3]), 4.0, 0.5),
                                  rng.choice([0.0, 0.3, 0.6]), rng.choice([32, 8]), None, "single", 1,
                                  rng.choice([1, 2]), runtime=runtime)
            s, gain = candidate.student, 0.5 if runtime == "torch" else 0.95  # what a thread or int8 buys
            latency = 10 * s.width * s.depth * (1 - candidate.prune_ratio) * gain ** (candidate.threads - 1) \
                * gain ** (candidate.bits == 8) * (1.0 if runtime == "torch" else 0.3)
            predictor.learn(candidate, {"latency_p50_ms": latency, "memory_mb": 5.0 + s.width},
                            predictor.predict(candidate))
        errors.append(predictor.mape()["latency_p50_ms"])
    assert statistics.median(errors) < 6, errors


def test_the_latency_cost_model_learns_a_fixed_overhead_plus_work_per_deployment() -> None:
    """As on the digits table: onnxruntime pays a fixed overhead per call and little per MAC,
    torch almost nothing fixed and more per MAC, so which is faster depends on the model's
    size. Fitted on 16 such models, the sum predicts 16 others within a few per cent."""
    import random
    import statistics

    from slimsearch.search.loop.cost_model import OverheadAndWork

    rng = random.Random(0)
    rows = []
    for _ in range(32):
        candidate = Candidate(StudentChoice(rng.choice([0.25, 0.5, 0.75, 1.0]), rng.choice([2, 3]), 4.0, 0.5),
                              rng.choice([0.0, 0.2, 0.4, 0.6]), 32, None, "single", 1, 1,
                              runtime=rng.choice(["torch", "onnxruntime"]))
        macs, params = toy_structure(candidate)
        latency = 0.5 + 0.3e-6 * macs if candidate.runtime == "onnxruntime" else 0.02 + 2e-6 * macs
        rows.append((candidate, (macs, params), latency))
    candidates, structures, latencies = zip(*rows[:16])
    model = OverheadAndWork.fit(list(candidates), list(structures), list(latencies))
    errors = [abs(model.latency(c, *s) - t) / t for c, s, t in rows[16:]]
    assert statistics.mean(errors) < 0.05, errors


def test_a_resumed_study_teaches_the_cost_predictor_with_one_fit_not_one_per_trial() -> None:
    """Resuming a study of 680 trials refitted the GP after each (minutes before the first
    new trial); now the recorded trials are learned first, then fitted once -- on the most
    recent MAX_ROWS of them."""
    from slimsearch.search.loop import predictor as module

    predictor = module.CostPredictor(toy_structure)
    fitted: list[int] = []
    original = predictor._fit
    predictor._fit = lambda values, kernel: fitted.append(len(values)) or original(values, kernel)  # type: ignore[method-assign]
    for index in range(module.MAX_ROWS + 20):
        candidate = Candidate(StudentChoice(0.5, 2, 4.0, 0.5), 0.0, 32, None, "single", 1, 1 + index % 2)
        predictor.learn(candidate, {"latency_p50_ms": 1.0 + index % 2, "memory_mb": 2.0}, None, refit=False)
    assert fitted == [] and predictor.predict(candidate) is None
    predictor.refit()
    assert fitted == [module.MAX_ROWS, module.MAX_ROWS]  # one fit per predicted objective
    predicted = predictor.predict(candidate)
    assert predicted is not None and abs(predicted["latency_p50_ms"][0] - 2.0) < 0.2


def test_the_cost_predictor_re_optimises_its_kernel_on_a_schedule_not_after_every_trial() -> None:
    """Optimising two GPs' hyperparameters took seconds per trial and grew with the study;
    between optimisations the model is refitted with the kernel it has."""
    from slimsearch.search.loop import predictor as module

    predictor = module.CostPredictor(toy_structure)
    optimised: list[int] = []
    original = predictor._fit
    predictor._fit = lambda values, fitted: (fitted is None and optimised.append(predictor._learned)) or \
        original(values, fitted)  # type: ignore[method-assign]
    for index in range(module.MAX_ROWS + 2 * module.REOPTIMISE_EVERY):
        candidate = Candidate(StudentChoice(0.5, 2, 4.0, 0.5), index % 3 * 0.25, 32, None, "single", 1, 1 + index % 2)
        predictor.learn(candidate, {"latency_p50_ms": (1.0 + index % 2) * (1 - index % 3 * 0.25), "memory_mb": 2.0},
                        predictor.predict(candidate))
    moments = sorted(set(optimised))
    assert moments[:3] == [module.MIN_TRIALS, 10, 13] and len(moments) < 25, moments
    assert all(b - a <= module.REOPTIMISE_EVERY for a, b in zip(moments, moments[1:]) if a >= module.MAX_ROWS)
    assert predictor.mape()["latency_p50_ms"] < 5, "refits with the kept kernel still predict"


def test_a_model_the_task_cannot_build_is_no_prediction_and_no_crash() -> None:
    """A candidate whose architecture raises (here every estimate does) is learned from its
    recorded MACs and parameters when the trial has them, and otherwise skipped."""
    from slimsearch.search.loop.predictor import MIN_TRIALS, CostPredictor

    def unbuildable(candidate: Candidate) -> tuple[float, float]:
        raise ValueError("digits CNN depth must be 1..3, got 4")

    predictor = CostPredictor(unbuildable)
    for index in range(MIN_TRIALS):
        candidate = Candidate(StudentChoice(0.5, 2, 4.0, 0.5), 0.0, 32, None, "single", 1, 1 + index % 2)
        predictor.learn(candidate, {"latency_p50_ms": 1.0 + index % 2, "memory_mb": 2.0}, None)
    assert predictor.rows == [], "no structure, nothing learned"
    for index in range(MIN_TRIALS):
        candidate = Candidate(StudentChoice(0.5, 2, 4.0, 0.5), 0.0, 32, None, "single", 1, 1 + index % 2)
        predictor.learn(candidate, {"latency_p50_ms": 1.0 + index % 2, "memory_mb": 2.0, "macs": 1e6, "params": 1e4},
                        None)
    assert len(predictor.rows) == MIN_TRIALS and predictor.predict(candidate) is None


def test_the_cost_predictor_claims_no_cost_far_outside_what_it_has_measured() -> None:
    """Eight readings between 1 and 2 ms, and a fit that extrapolates wildly (a fake standing
    in for a GP far from its data): the prediction stays within half the least and twice the
    most measured cost."""
    import math
    import random

    import numpy as np

    from slimsearch.search.loop.predictor import CostPredictor

    class Extrapolating:
        def predict(self, rows: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray]:
            return np.array([math.log(1000.0)]), np.array([0.1])

    rng = random.Random(1)
    predictor = CostPredictor(toy_structure)
    for _ in range(8):
        candidate = Candidate(StudentChoice(rng.choice([0.5, 1.0]), 2, 4.0, 0.5), 0.0, 32, None, "single", 1, 1)
        predictor.learn(candidate, {"latency_p50_ms": rng.uniform(1, 2), "memory_mb": rng.uniform(1, 2)}, None)
    predictor._models = {name: Extrapolating() for name in predictor._models}  # type: ignore[misc]
    predicted = predictor.predict(Candidate(None, 0.9, 4, None, "single", 1, 16))
    assert predicted is not None
    assert all(0.5 <= value <= 4.0 for value, _ in predicted.values()), predicted
