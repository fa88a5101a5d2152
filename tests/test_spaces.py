from __future__ import annotations

import json

import optuna
import pytest
from pydantic import ValidationError

from slimsearch.spaces import (
    anchor_params,
    deployment_variants,
    follow_up_params,
    Candidate,
    ParallelSpec,
    PruneSpec,
    QuantizeSpec,
    SpaceSpec,
    StudentChoice,
    StudentSpec,
    grid_params,
    rejection_reason,
    sample_candidates,
    suggest_candidate,
    teacher_params,
    trained_model_params,
    unmeasured_params,
)
from slimsearch.spaces.sampling import unpruned_twin_params


def _trial_with(params: dict) -> optuna.trial.FixedTrial:
    return optuna.trial.FixedTrial(params)


def test_teacher_candidate_asks_no_student_parameters() -> None:
    spec = SpaceSpec()
    trial = _trial_with({"student": "teacher", "prune.ratio": 0.0, "quantize.bits": 32,
                         "parallel.strategy": "single", "parallel.threads": 2, "parallel.runtime": "torch"})
    candidate = suggest_candidate(trial, spec)
    assert candidate.student is None
    assert set(trial.params) == {"student", "prune.ratio", "quantize.bits", "parallel.strategy", "parallel.threads",
                                 "parallel.runtime"}


def test_conditional_parameters_appear_only_when_they_matter() -> None:
    spec = SpaceSpec()
    trial = _trial_with({"student": "distilled", "student.width": 0.5, "student.depth": 2,
                         "student.temperature": 4.0, "student.alpha": 0.5, "prune.ratio": 0.3,
                         "quantize.bits": 16, "quantize.float_dtype": "bfloat16",
                         "parallel.strategy": "data_parallel", "parallel.degree": 2, "parallel.rank_threads": 1})
    candidate = suggest_candidate(trial, spec, cpu_count=2)
    assert candidate.student == StudentChoice(0.5, 2, 4.0, 0.5)
    assert candidate.float_dtype == "bfloat16" and candidate.degree == 2 and candidate.threads == 1
    assert "parallel.threads" not in trial.params


def test_multi_rank_threads_only_offer_choices_that_fit_the_host() -> None:
    spec = SpaceSpec()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        candidate = suggest_candidate(study.ask(), spec, cpu_count=2)
        if candidate.strategy == "data_parallel":
            assert candidate.degree * candidate.threads <= 2


def test_random_samples_cover_the_dimensions_and_are_valid_candidates() -> None:
    candidates = sample_candidates(SpaceSpec(), 80, seed=3)
    assert {c.bits for c in candidates} == {32, 16, 8, 4}
    assert {c.strategy for c in candidates} == {"single", "data_parallel"}
    assert any(c.student is None for c in candidates) and any(c.student for c in candidates)
    assert all((c.float_dtype is not None) == (c.bits == 16) for c in candidates)
    assert all((c.degree > 1) == (c.strategy != "single") for c in candidates)


def test_an_unmeasured_candidate_is_drawn_until_the_space_is_used_up() -> None:
    spec = SpaceSpec(prune=PruneSpec(low=0.0, high=0.0), quantize=QuantizeSpec(bits=[32, 8, 4]),
                     student=StudentSpec(distill=False),
                     parallel=ParallelSpec(strategies=["single"], threads=[1], runtimes=["torch"]))
    every = {suggest_candidate(_trial_with(p), spec).fingerprint(): p for p in grid_params(spec)}
    assert len(every) == 3
    measured = set(list(every)[:2])
    fresh = unmeasured_params(spec, measured, seed=0, draws=50)
    assert fresh is not None and suggest_candidate(_trial_with(fresh), spec).fingerprint() not in measured
    assert unmeasured_params(spec, set(every), seed=0, draws=50) is None


def test_candidate_is_hashable_and_round_trips_through_json() -> None:
    candidate = Candidate(StudentChoice(0.25, 3, 2.0, 0.0), 0.4, 4, None, "single", 1, 2)
    again = Candidate.from_dict(json.loads(json.dumps(candidate.to_dict())))
    assert again == candidate and hash(again) == hash(candidate)
    assert again.fingerprint() == candidate.fingerprint()
    assert candidate.simulated and "simulated" in candidate.summary()


@pytest.mark.parametrize(
    ("candidate", "fragment"),
    [
        (Candidate(None, 0.0, 32, None, "tensor_parallel", 2, 2), "needs degree x threads = 4 cores"),
        (Candidate(None, 0.0, 32, None, "pipeline_parallel", 2, 1), None),
        (Candidate(None, 0.0, 32, None, "data_parallel", 2, 2), "needs degree x threads = 4 cores"),
        (Candidate(None, 0.0, 32, None, "data_parallel", 2, 1), None),
    ],
)
def test_rejection_reasons(candidate: Candidate, fragment: str | None) -> None:
    reason = rejection_reason(candidate, batch_size=64, cpu_count=2)
    assert (reason is None) if fragment is None else (fragment in reason)


def test_batch_that_does_not_split_over_ranks_is_rejected() -> None:
    reason = rejection_reason(Candidate(None, 0.0, 32, None, "data_parallel", 2, 1), batch_size=33, cpu_count=4)
    assert reason and "does not split evenly" in reason


def test_teacher_params_are_enqueueable_only_if_the_space_contains_the_teacher() -> None:
    assert teacher_params(SpaceSpec())["student"] == "teacher"
    assert teacher_params(SpaceSpec.model_validate({"quantize": {"bits": [8]}})) is None
    assert teacher_params(SpaceSpec.model_validate({"student": {"keep_teacher": False}})) is None


def test_anchor_trials_are_the_teacher_as_is_its_plain_int8_then_the_largest_student_each_a_valid_candidate() -> None:
    spec = SpaceSpec.model_validate({"quantize": {"qat": [False, True]},
                                     "student": {"width": [0.25, 1.0], "depth": [2, 3], "alpha": [0.5, 0.0]}})
    anchors = anchor_params(spec)
    candidates = [suggest_candidate(optuna.trial.FixedTrial(params), spec) for params in anchors]
    assert [(c.student, c.prune_ratio, c.bits, c.qat, c.runtime, c.strategy) for c in candidates[:2]] == [
        (None, 0.0, 32, False, "torch", "single"), (None, 0.0, 8, False, "torch", "single")]
    largest = candidates[2]
    assert len(candidates) == 3 and largest.student is not None and (largest.prune_ratio, largest.bits) == (0.0, 32)
    assert (largest.student.width, largest.student.depth, largest.student.alpha) == (1.0, 3, 0.5), "the config's first mix"
    assert len(anchor_params(SpaceSpec.model_validate({"quantize": {"bits": [32, 4]}}))) == 2  # no int8: teacher, student
    assert len(anchor_params(SpaceSpec.model_validate({"student": {"distill": False}}))) == 2
    assert anchor_params(SpaceSpec.model_validate({"quantize": {"bits": [8], "qat": [True]}})) == []


def test_spaces_with_teacher_initialised_students_also_anchor_the_smallest_cut_student_in_int8() -> None:
    spec = SpaceSpec.model_validate({
        "student": {"init": ["scratch", "teacher"], "width": [0.5, 1.0], "depth": [2, 4], "epochs": [2, 6]},
        "lowrank": {"ratios": [0.0, 0.5]}, "parallel": {"runtimes": ["torch", "onnxruntime"]}})
    candidates = [suggest_candidate(optuna.trial.FixedTrial(params), spec) for params in anchor_params(spec)]
    assert all(c.rank_ratio == 0.0 and c.prune_ratio == 0.0 and c.runtime == "torch" for c in candidates)
    cut, largest = candidates[2:]
    assert len(candidates) == 4 and cut.student is not None and cut.bits == 8
    assert (cut.student.init, cut.student.width, cut.student.depth, cut.student.epochs) == ("teacher", 0.5, 2, 6)
    assert largest.student is not None and largest.bits == 32
    assert (largest.student.init, largest.student.width, largest.student.depth) == ("teacher", 1.0, 4), \
        "the largest student starts from the teacher's layers where it may"
    assert len(anchor_params(SpaceSpec())) == 3  # scratch-only students: no cut anchor
    one_size = SpaceSpec.model_validate({"student": {"init": ["teacher"], "width": [0.5], "depth": [2]},
                                         "quantize": {"bits": [32]}})
    assert len(anchor_params(one_size)) == 2, "teacher; the cut and the largest student are one fp32 candidate, once"


def test_a_pruned_student_s_unpruned_twin_comes_before_its_deployment_variants_only_if_it_was_accurate() -> None:
    spec = SpaceSpec.model_validate({"prune": {"low": 0.0, "high": 0.5, "step": 0.25, "importance": ["l1", "l2"]},
                                     "quantize": {"bits": [32, 8]},
                                     "parallel": {"strategies": ["single"], "threads": [1, 2], "runtimes": ["torch"]}})
    student = {"student": "distilled", "student.width": 0.5, "student.depth": 2, "student.temperature": 4.0,
               "student.alpha": 0.5}
    pruned = {**student, "prune.ratio": 0.5, "prune.importance": "l2", "quantize.bits": 8,
              "parallel.strategy": "single", "parallel.threads": 1}
    twin = unpruned_twin_params(spec, pruned)
    assert twin == {**student, "prune.ratio": 0.0, "quantize.bits": 8, "parallel.strategy": "single",
                    "parallel.threads": 1}, "same student and deployment, no pruning parameters"
    assert suggest_candidate(optuna.trial.FixedTrial(twin), spec).prune_ratio == 0.0
    assert unpruned_twin_params(spec, twin) is None and unpruned_twin_params(spec, anchor_params(spec)[0]) is None
    assert unpruned_twin_params(spec, {**pruned, "quantize.qat": True}) is None, "a QAT twin is a training run"
    assert unpruned_twin_params(SpaceSpec.model_validate({"prune": {"low": 0.25, "high": 0.5, "step": 0.25}}),
                                pruned) is None, "a space that always prunes holds no twin"

    follow_ups = follow_up_params(spec, pruned, 2, 0, 64, accurate=True)
    assert follow_ups[0] == twin and len(follow_ups) == 3
    assert all(trained_model_params(v) == trained_model_params(pruned) for v in follow_ups[1:])
    assert twin not in follow_up_params(spec, pruned, 2, 0, 64, accurate=False), "an inaccurate model gets no twin"
    assert {v["quantize.bits"] for v in follow_up_params(spec, pruned, 5, 0, 64, accurate=False)} == {32}
    assert twin not in follow_up_params(spec, pruned, 2, 0, 64, accurate=True,
                                        known=lambda c: c.prune_ratio == 0.0), "a measured or queued twin is not repeated"
    assert follow_up_params(spec, pruned, 0, 0, 64, accurate=True) == [], "deployment_variants: 0 turns them off"


@pytest.mark.parametrize(
    "bad",
    [
        {"prune": {"low": 0.5, "high": 0.2}},
        {"prune": {"high": 0.95}},
        {"quantize": {"bits": [5]}},
        {"student": {"alpha": [1.5]}},
        {"student": {"keep_teacher": False, "distill": False}},
        {"parallel": {"strategies": ["model_parallel"]}},
        {"parallel": {"degree": [0]}},
        {"prune": {"ratio": 0.3}},
    ],
)
def test_invalid_space_declarations_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SpaceSpec.model_validate(bad)


def test_grid_enumerates_every_candidate_once_with_only_the_parameters_that_exist() -> None:
    spec = SpaceSpec(
        student=StudentSpec(width=[0.5, 1.0], depth=[2], temperature=[4.0], alpha=[0.0, 0.5]),
        prune=PruneSpec(low=0.0, high=0.6, step=0.3),
        quantize=QuantizeSpec(bits=[32, 16, 8]),
        parallel=ParallelSpec(strategies=["single"], threads=[1, 2]),
    )
    grid = grid_params(spec)
    # (teacher + 2 widths x 2 alphas) x 3 ratios x (32 x 2 runtimes, 8 x 2 runtimes, 16 x 2 dtypes) x 2 threads
    assert len(grid) == 5 * 3 * 6 * 2
    candidates = {suggest_candidate(optuna.trial.FixedTrial(p), spec) for p in grid}
    assert len(candidates) == len(grid), "no candidate twice"
    teacher_rows = [p for p in grid if p["student"] == "teacher"]
    assert all("student.width" not in p for p in teacher_rows)
    assert all(("quantize.float_dtype" in p) == (p["quantize.bits"] == 16) for p in grid)


def test_onnxruntime_is_offered_only_where_it_can_serve() -> None:
    spec = SpaceSpec(parallel=ParallelSpec(strategies=["single", "data_parallel"], runtimes=["torch", "onnxruntime"]),
                     quantize=QuantizeSpec(bits=[32, 16, 8, 4], qat=[False, True]))
    for params in grid_params(spec, cpu_count=2):
        candidate = suggest_candidate(optuna.trial.FixedTrial(params), spec, cpu_count=2)
        offered = candidate.strategy == "single" and candidate.bits in (32, 8) and not candidate.qat
        assert ("parallel.runtime" in params) == offered
        assert rejection_reason(candidate, 64, cpu_count=2) is None or candidate.runtime == "torch"
    wrong = Candidate(None, 0.0, 16, "float16", "single", 1, 1, runtime="onnxruntime")
    assert "onnxruntime" in rejection_reason(wrong, 64)


def test_torch_compile_is_offered_for_float32_only_and_int8_keeps_the_other_runtimes() -> None:
    spec = SpaceSpec(parallel=ParallelSpec(strategies=["single"], runtimes=["torch", "onnxruntime", "torch_compile"]),
                     quantize=QuantizeSpec(bits=[32, 8]), student=StudentSpec(distill=False))
    runtimes = {}
    for params in grid_params(spec, cpu_count=2):
        candidate = suggest_candidate(optuna.trial.FixedTrial(params), spec, cpu_count=2)
        runtimes.setdefault(candidate.bits, set()).add(candidate.runtime)
        assert rejection_reason(candidate, 64, cpu_count=2) is None
    assert runtimes == {32: {"torch", "onnxruntime", "torch_compile"}, 8: {"torch", "onnxruntime"}}
    int8 = [p for p in grid_params(spec, cpu_count=2) if p["quantize.bits"] == 8]
    assert all("parallel.int8_runtime" in p and "parallel.runtime" not in p for p in int8), "own choice list"
    compiled_int8 = Candidate(None, 0.0, 8, None, "single", 1, 1, runtime="torch_compile")
    assert "float32" in rejection_reason(compiled_int8, 64)
    assert [p.get("parallel.int8_runtime", p.get("parallel.runtime")) for p in anchor_params(spec)] == ["torch", "torch"]
    assert all(p["student"] == "teacher" for p in anchor_params(spec)), "no students in this space: no student anchor"


def test_deployment_variants_serve_the_same_trained_model_another_way_that_the_host_can_hold() -> None:
    spec = SpaceSpec.model_validate({"quantize": {"bits": [32, 8], "qat": [False, True]},
                                     "parallel": {"strategies": ["single", "data_parallel"], "degree": [2],
                                                  "threads": [1, 2], "runtimes": ["torch", "onnxruntime"]}})
    params = anchor_params(spec)[0]
    variants = deployment_variants(spec, params, limit=100, seed=0, batch_size=64, cpu_count=2)
    assert params not in variants and all(trained_model_params(v) == trained_model_params(params) for v in variants)
    candidates = [suggest_candidate(optuna.trial.FixedTrial(v), spec, 2) for v in variants]
    assert len({c.fingerprint() for c in candidates}) == len(candidates)
    assert all(c.degree * c.threads <= 2 for c in candidates)
    # post-training int8 is a deployment of the fp32 model; QAT is a training run, not a variant
    assert {c.bits for c in candidates} == {32, 8} and not any(c.qat for c in candidates)
    assert {(c.strategy, c.runtime) for c in candidates} >= {("single", "onnxruntime"), ("data_parallel", "torch")}
    assert deployment_variants(spec, params, 2, 7, 64, 2) == deployment_variants(spec, params, 2, 7, 64, 2)
    assert len(deployment_variants(spec, params, 2, 7, 64, 2)) == 2
    odd_batch = deployment_variants(spec, params, 100, 0, batch_size=63, cpu_count=2)  # 63 rows: no 2 ranks
    assert sorted(map(str, odd_batch)) == sorted(str(v) for v in variants if v["parallel.strategy"] == "single")
    at_int8 = next(v for v in variants if v["quantize.bits"] == 8)  # missed accuracy at int8: only more precise
    assert {v["quantize.bits"] for v in deployment_variants(spec, at_int8, 100, 0, 64, 2, above_bits=8)} == {32}

    def cost(candidate: Candidate) -> float:
        return candidate.bits / candidate.threads / candidate.degree

    cheapest = deployment_variants(spec, params, 3, 0, 64, 2, cost=cost)
    costs = sorted(cost(candidate) for candidate in candidates)
    assert [cost(suggest_candidate(optuna.trial.FixedTrial(v), spec, 2)) for v in cheapest] == costs[:3]
    qat = {**params, "quantize.bits": 8, "quantize.qat": True}
    qat_variants = [suggest_candidate(optuna.trial.FixedTrial(v), spec, 2)
                    for v in deployment_variants(spec, qat, 100, 0, 64, 2)]
    assert qat_variants and all(c.bits == 8 and c.qat for c in qat_variants)  # trained for int8: stays int8
