"""Paired timing: the reference around each block cancels the host's speed state, and each
thread count is calibrated to its own reference."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from rich.console import Console
from torch import nn

from slimsearch.evaluators import ServingRequest, TimingProtocol

from slimsearch.evaluators.paired_timing import (
    BLOCKS_PER_ROUND,
    MAX_CALLS_PER_ROUND,
    REFERENCE_WORKLOAD,
    REFERENCE_BLOCK_S,
    ROUNDS_AGREE,
    TimingPlan,
    calibrate,
    reference_speeds,
    reference_workload,
    rounds_agree,
    scaled_to_window,
)
from slimsearch.evaluators import hardware_identity
from slimsearch.search.config import EvaluationSettings, SlimsearchConfig
from slimsearch.search.loop import baseline
from slimsearch.search.loop.errors import SearchError
from slimsearch.search.loop.trial import REFERENCE_WORKLOAD_KEY, TrialResult, Yardstick, time_serving
from slimsearch.search.objectives import LATENCY_REFERENCE_MS, latency_reference_key
from slimsearch.search.store import records
from slimsearch.spaces import Candidate


def _round(speeds: list[float], candidate_ms: float = 2.0, reference_ms: float = 1.0) -> dict[str, list[list[float]]]:
    """A round on a host whose speed factor is ``speeds[i]`` around block ``i`` (the
    reference block after the last candidate block sees the last block's speed)."""
    return {"candidate": [[candidate_ms * s] * 4 for s in speeds],
            "reference": [[reference_ms * s] * 3 for s in [*speeds, speeds[-1]]]}


def test_a_host_slowdown_that_hits_both_is_taken_out_of_the_calibrated_latency() -> None:
    steady = [1.0] * BLOCKS_PER_ROUND
    slowed = [1.0, 1.6, 1.6, 1.6, 1.0, 1.6]  # a speed state that comes and goes within the window
    calm = calibrate([_round(steady)], reference_ms=1.0)
    busy = calibrate([_round(slowed), _round([1.6] * BLOCKS_PER_ROUND)], reference_ms=1.0)
    assert statistics.median(busy.raw_ms) == pytest.approx(3.2), "raw readings keep the slowdown"
    assert statistics.median(calm.calibrated_ms) == pytest.approx(2.0)
    assert statistics.median(busy.calibrated_ms) == pytest.approx(2.0, rel=0.05)
    assert busy.window_reference_ms == pytest.approx(1.6)


def test_without_a_study_reference_the_window_median_is_the_yardstick() -> None:
    readings = calibrate([_round([1.0] * BLOCKS_PER_ROUND), _round([2.0] * BLOCKS_PER_ROUND)], reference_ms=None)
    assert readings.window_reference_ms == pytest.approx(1.5)
    assert set(round(ms, 6) for ms in readings.calibrated_ms) == {3.0}, "both speed states scaled to the median"


def _plan(candidate_ms: float, seconds_left: float = 240.0) -> TimingPlan:
    return TimingPlan.from_warmup(candidate_ms, reference_ms=0.7, round_s=0.3, rounds=3, max_rounds=6,
                                  seconds_left=seconds_left)


def test_two_rounds_settle_the_measurement_only_when_they_agree_relative_to_the_reference() -> None:
    steady = [1.0] * BLOCKS_PER_ROUND
    host_slower = _round([1.5] * BLOCKS_PER_ROUND)  # the same candidate in a slower host state
    assert rounds_agree([_round(steady), host_slower]), "a host speed change moves both alike"
    assert not rounds_agree([_round(steady)]), "one round is not agreement"
    candidate_slower = _round(steady, candidate_ms=2.0 * (1 + 2 * ROUNDS_AGREE))
    assert not rounds_agree([_round(steady), candidate_slower]), "the candidate itself read differently"
    assert rounds_agree([_round(steady), _round(steady, candidate_ms=2.0 * (1 + ROUNDS_AGREE / 2))])


def test_the_timing_budget_is_seconds_not_calls() -> None:
    fast, slow, tiny = _plan(1.0), _plan(3000.0), _plan(0.001)
    assert fast.candidate_calls * BLOCKS_PER_ROUND == 300, "a 1 ms model: 0.3 s of calls"
    assert slow.candidate_calls == 1, "a 3 s model: one call a block"
    assert tiny.candidate_calls * BLOCKS_PER_ROUND == MAX_CALLS_PER_ROUND
    assert fast.reference_calls * 0.7 >= 1000 * REFERENCE_BLOCK_S, "the reference's seconds around a block"
    assert (fast.rounds, fast.max_rounds) == (3, 6)


def test_a_model_too_slow_for_every_round_is_timed_in_the_rounds_that_fit() -> None:
    slow = _plan(10_000.0, seconds_left=150.0)  # a round of six 10 s calls takes 60 s
    assert (slow.rounds, slow.max_rounds) == (2, 2)
    hopeless = _plan(60_000.0, seconds_left=150.0)
    assert (hopeless.rounds, hopeless.max_rounds) == (1, 1), "still measured: one round, as slow as it is"


def test_the_reference_workload_is_the_same_computation_in_every_process() -> None:
    assert reference_workload()().equal(reference_workload()())


def test_the_reference_is_calibrated_per_thread_count_at_the_window_s_speed() -> None:
    speeds = reference_speeds(reference_workload(), [1, 2], block_calls=2)
    assert set(speeds) == {1, 2} and all(ms > 0 for ms in speeds.values())
    anchored = scaled_to_window({1: 0.7, 2: 0.5}, own_threads=2, window_reference_ms=0.55)
    assert anchored[2] == pytest.approx(0.55), "the window's own count is the window's reading"
    assert anchored[1] == pytest.approx(0.77), "other counts keep their ratio to it"


def test_each_thread_count_is_calibrated_on_the_cores_its_trials_are_pinned_to() -> None:
    cores = sorted(os.sched_getaffinity(0))
    counts = sorted({1, len(cores)})
    seen: dict[int, set[frozenset[int]]] = {count: set() for count in counts}

    def reference() -> torch.Tensor:
        seen[torch.get_num_threads()].add(frozenset(os.sched_getaffinity(0)))
        return torch.zeros(1)

    threads = torch.get_num_threads()
    reference_speeds(reference, counts, block_calls=2)
    assert seen == {count: {frozenset(cores[:count])} for count in counts}, "a 1-thread trial's probe runs on core 0 alone"
    assert sorted(os.sched_getaffinity(0)) == cores and torch.get_num_threads() == threads, "the caller's are restored"


class _Captured(Exception):
    """Raised by the fake placement with the request it was given."""


class _CapturingPlacement:
    def measure(self, artifact: object, plan: object, request: ServingRequest) -> None:
        raise _Captured(request)


def _protocol_for(threads: int, yardstick: Yardstick) -> TimingProtocol:
    candidate = Candidate(None, 0.0, 32, None, "single", 1, threads)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(_Captured) as captured:
        time_serving(candidate, SimpleNamespace(serving=model), Path("unused.pt"), torch.randn(2, 4),
                     EvaluationSettings(), _CapturingPlacement(), yardstick)
    return captured.value.args[0].protocol


def test_a_trial_is_calibrated_to_the_reference_of_its_own_thread_count() -> None:
    calibrated = {"metrics": {"accuracy": 0.9, LATENCY_REFERENCE_MS: 0.5, latency_reference_key(1): 0.7,
                              latency_reference_key(2): 0.5}, "candidate": {"threads": 2},
                  REFERENCE_WORKLOAD_KEY: REFERENCE_WORKLOAD}
    yardstick = Yardstick.of(calibrated, "accuracy")
    assert _protocol_for(1, yardstick).reference_ms == 0.7, "a 1-thread trial is scaled to the 1-thread reference"
    assert _protocol_for(2, yardstick).reference_ms == 0.5
    assert _protocol_for(4, yardstick).reference_ms is None, "an uncalibrated count: the window is its yardstick"
    assert _protocol_for(1, Yardstick(calibrate_threads=(1, 2))).calibrate_threads == (1, 2)


def test_a_baseline_calibrated_against_another_reference_workload_is_refused() -> None:
    earlier = {"metrics": {"accuracy": 0.9, latency_reference_key(2): 0.43}, "candidate": {"threads": 2}}
    with pytest.raises(SearchError, match=r"earlier slimsearch .* \(slimsearch run --n-trials 1\)"):
        Yardstick.of(earlier, "accuracy")
    with pytest.raises(SearchError, match="'two-conv'"):
        Yardstick.of(earlier | {REFERENCE_WORKLOAD_KEY: "two-conv"}, "accuracy")
    assert Yardstick.of({"metrics": {"accuracy": 0.9}}, "accuracy").teacher_quality == 0.9, "nothing calibrated"


def test_the_owner_resuming_a_study_calibrated_against_an_earlier_reference_measures_the_teacher_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    earlier = {"metrics": {"accuracy": 0.9, latency_reference_key(2): 0.43}, "hardware": hardware_identity(),
               "candidate": {"threads": 2}}
    study.set_user_attr(records.STUDY_BASELINE, earlier)
    study.set_user_attr(records.STUDY_REFERENCE_POINT, [0.0, 10.0])
    fresh = TrialResult({"accuracy": 0.9, latency_reference_key(2): 5.2}, hardware=hardware_identity())
    monkeypatch.setattr(baseline, "_measure_teacher", lambda *_: fresh)

    def resume(worker: int) -> dict[str, object]:
        return baseline.study_baseline(study, SlimsearchConfig(), None, None, tmp_path, Console(quiet=True), worker)

    assert resume(worker=1) == earlier, "a worker does not re-take it (its Yardstick refuses the stale one)"
    assert baseline.baseline_param_prefix(study) == "baseline."
    taken = resume(worker=0)
    assert baseline.baseline_param_prefix(study) == "baseline.retaken1.", "MLflow params cannot change"
    assert Yardstick.of(taken, "accuracy").reference_for(2) == 5.2
    assert study.user_attrs[records.STUDY_SUPERSEDED_BASELINES] == [earlier], "the earlier baseline is kept"
    assert study.user_attrs[records.STUDY_REFERENCE_POINT] == [0.0, 10.0], "the hypervolume's box stays"
    monkeypatch.setattr(baseline, "_measure_teacher", lambda *_: pytest.fail("measured again"))
    assert resume(worker=0) == taken
