"""Paired timing: the reference around each block cancels the host's speed state, and each
thread count is calibrated to its own reference."""

from __future__ import annotations

import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from slimsearch.evaluators import ServingRequest, TimingProtocol

from slimsearch.evaluators.paired_timing import (
    BLOCKS_PER_ROUND,
    MAX_CALLS_PER_ROUND,
    TimingPlan,
    calibrate,
    reference_speeds,
    reference_workload,
    scaled_to_window,
)
from slimsearch.search.config import EvaluationSettings
from slimsearch.search.loop.trial import Yardstick, time_serving
from slimsearch.search.objectives import LATENCY_REFERENCE_MS, latency_reference_key
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


def test_the_timing_budget_is_seconds_not_calls() -> None:
    fast, slow, tiny = _plan(1.0), _plan(3000.0), _plan(0.001)
    assert fast.candidate_calls * BLOCKS_PER_ROUND == 300, "a 1 ms model: 0.3 s of calls"
    assert slow.candidate_calls == 1, "a 3 s model: one call a block"
    assert tiny.candidate_calls * BLOCKS_PER_ROUND == MAX_CALLS_PER_ROUND
    assert fast.reference_calls * 0.7 >= 20, "20 ms of reference around a block"
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
    baseline = {"metrics": {"accuracy": 0.9, LATENCY_REFERENCE_MS: 0.5, latency_reference_key(1): 0.7,
                            latency_reference_key(2): 0.5}, "candidate": {"threads": 2}}
    yardstick = Yardstick.of(baseline, "accuracy")
    assert _protocol_for(1, yardstick).reference_ms == 0.7, "a 1-thread trial is scaled to the 1-thread reference"
    assert _protocol_for(2, yardstick).reference_ms == 0.5
    assert _protocol_for(4, yardstick).reference_ms is None, "an uncalibrated count: the window is its yardstick"
    assert _protocol_for(1, Yardstick(calibrate_threads=(1, 2))).calibrate_threads == (1, 2)


def test_a_study_calibrated_at_one_thread_count_keeps_it_for_that_count_only() -> None:
    older = Yardstick.of({"metrics": {"accuracy": 0.9, LATENCY_REFERENCE_MS: 0.5}, "candidate": {"threads": 2}},
                         "accuracy")
    assert (older.reference_for(2), older.reference_for(1)) == (0.5, None)
