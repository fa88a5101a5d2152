"""Paired timing: the candidate's calls interleaved with a fixed reference workload.

A 2-core cloud host runs in speed states 30-70 % apart that last seconds to minutes and
hit every process on it at once (``benchmarks/host_states.py``): ten fresh probes of one
int8 digits model read 3.5 ms or 5.1 ms p50 depending on the state, CV 17.9 % (idle
Zen 3, 2026-11-29). A workload timed right before and after each block of candidate
calls sees the same state, but only as much of it as its own working set does: two small
L2-resident convolutions slowed 1.09x where the digits models slowed 1.06-1.27x, the
teacher 1.21x (idle EPYC family 25 model 17, 2026-11-30), and the teacher measured as a study's baseline
and again as its trial 0 differed by up to 18 %. The reference is therefore a whole
small-CNN forward with a multi-MB working set, which slows like the models it is
paired with: the same comparison then differed by at most 6.6 % (10 studies). It costs
precision on small models, which slow less than it does: the idle retest MAPE of the digits
table rose from 2.1 % to 5.7 %, within the 8 % bound (``benchmarks/results/retest.md``). So each
block of candidate calls is scaled by
``reference_ms / (reference read around the block)``: the latency the candidate has
when the reference runs at ``reference_ms`` -- the study's calibrated value (measured
with the teacher's baseline), or this window's own median where there is none.
The raw readings are kept beside the calibrated ones.

The reference runs on the candidate's threads (so it sees the cores the candidate
runs on), which makes its speed depend on the thread count: 9.6 ms on one thread,
5.2 ms on two (idle EPYC family 25 model 17, 2026-11-30). A study's calibrated value is therefore one
per thread count, all taken in the baseline's window, each on the cores a probe of that
count is pinned to (``reference_speeds``);
calibrating a one-thread candidate to the two-thread value read it 33 % fast (the
digits teacher: 6.00 ms recorded, 8.97 ms raw, with the earlier reference).

The amount of timing is a budget in seconds (as pyperf and Google Benchmark size
their loops), not a count of calls: a 1 ms model gets hundreds of calls a round and a
3 s model a few, with their statistics' uncertainty recorded either way. Rounds stop
when they agree (``rounds_agree``): a third round only where the first two differ.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from slimsearch.evaluators.latency import time_calls

BLOCKS_PER_ROUND = 6
"""Candidate blocks per round, each with a reference block on either side."""
MIN_CALLS_PER_ROUND = BLOCKS_PER_ROUND
MAX_CALLS_PER_ROUND = 600
REFERENCE_BLOCK_S = 0.01
"""Seconds of reference calls around each block (at most a candidate block's). The
reference runs 2.5 ms on two threads of an EPYC family 26 model 2 (2026-11-30), where
0.02 s meant 9 calls (+1 warm-up) around each of a round's 7 blocks: about 0.17 s of a
0.3 s round's candidate time again, more calls than a block's median needs. 0.01 s is 3-5
calls on the hosts seen (``MIN_REFERENCE_CALLS``); with ``ROUNDS_AGREE`` it cut that
host's probe from 3.27 to 2.68 s (``benchmarks/results/probe_cost.md``)."""
MIN_REFERENCE_CALLS = 3
REFERENCE_WARMUP_CALLS = 1
"""Untimed reference calls at the start of each reference block: the first runs beside the
candidate runtime's threads that may still spin after its block (onnxruntime's pool does)
and after the candidate has filled the cache, and a block is only 3-4 calls of the
reference, so one such call moves its median."""


REFERENCE_STAGES = (32, 64, 128)
"""Channels of the reference CNN's conv-BN-ReLU stages (2x2 max-pools between)."""
REFERENCE_BATCH = 64
REFERENCE_WORKLOAD = f"cnn{'-'.join(map(str, REFERENCE_STAGES))}-b{REFERENCE_BATCH}"
"""The reference's name, stored with a study's calibration: a calibration taken against
another workload (an earlier slimsearch's) scales this one's readings wrongly -- the
two-convolution reference ran 0.43 ms where this one runs 5.2 ms, a 12x error."""


def reference_workload() -> Callable[[], torch.Tensor]:
    """The fixed workload every window is paired with: a small CNN's forward on 64 16x16
    maps (about 10 MB of activations; ~5 ms on two cores of an EPYC family 25 model 17, on the caller's torch
    threads), seeded so it is the same computation in every process and study."""
    generator = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    channels = 1
    for stage, width in enumerate(REFERENCE_STAGES):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if stage < len(REFERENCE_STAGES) - 1 else []
        channels = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 10)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    inputs = torch.randn(REFERENCE_BATCH, 1, 16, 16, generator=generator)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return net(inputs)

    return call


CALIBRATION_CYCLES = 12
"""Blocks of the reference per thread count when calibrating, alternated across counts."""


def reference_speeds(reference: Callable[[], torch.Tensor], thread_counts: list[int], block_calls: int) -> dict[int, float]:
    """Median reference latency (ms) at each of ``thread_counts``, in blocks of
    ``block_calls`` that alternate between the counts, so a host speed state hits every
    count alike. Each count is timed on the cores a probe of that many threads is pinned
    to (the first ones of the caller's: ``serving_probe._pin_cores``), as the trials it
    calibrates read the reference; the caller's thread count and cores are restored after."""
    own_threads, own_cores = torch.get_num_threads(), os.sched_getaffinity(0)
    cores = sorted(own_cores)
    samples: dict[int, list[float]] = {threads: [] for threads in thread_counts}
    try:
        for _ in range(CALIBRATION_CYCLES):
            for threads in thread_counts:
                # Cores before threads: a pool thread started now inherits the wider set.
                os.sched_setaffinity(0, cores[:threads])
                torch.set_num_threads(threads)
                samples[threads].extend(time_calls(reference, 1, block_calls))
    finally:
        os.sched_setaffinity(0, own_cores)
        torch.set_num_threads(own_threads)
    return {threads: statistics.median(times) for threads, times in samples.items()}


def scaled_to_window(speeds: dict[int, float], own_threads: int, window_reference_ms: float) -> dict[int, float]:
    """``speeds`` anchored to the reference as read in the timed window at ``own_threads``:
    the calibration's ratios between thread counts, at the window's speed."""
    return {threads: window_reference_ms * ms / speeds[own_threads] for threads, ms in speeds.items()}


@dataclass(frozen=True)
class TimingPlan:
    """Calls per candidate and reference block, and the rounds wanted / allowed, from the
    warm-up's timings and the seconds left before the probe's deadline."""

    candidate_calls: int
    reference_calls: int
    rounds: int
    max_rounds: int

    @classmethod
    def from_warmup(cls, candidate_ms: float, reference_ms: float, round_s: float, rounds: int, max_rounds: int,
                    seconds_left: float) -> TimingPlan:
        """A slow model gets fewer rounds rather than a timeout: rounds are cut to what fits
        in ``seconds_left`` (at least one), so it is measured as slow, with a wide interval."""
        per_round = round(round_s * 1000 / max(candidate_ms, 1e-6))
        per_round = min(MAX_CALLS_PER_ROUND, max(MIN_CALLS_PER_ROUND, per_round))
        block_s = min(REFERENCE_BLOCK_S, round_s / BLOCKS_PER_ROUND)  # never longer than a candidate block
        reference_calls = max(MIN_REFERENCE_CALLS, math.ceil(block_s * 1000 / max(reference_ms, 1e-6)))
        candidate_calls = max(1, per_round // BLOCKS_PER_ROUND)
        round_ms = (BLOCKS_PER_ROUND * candidate_calls * candidate_ms
                    + (BLOCKS_PER_ROUND + 1) * (REFERENCE_WARMUP_CALLS + reference_calls) * reference_ms)
        affordable = int(seconds_left * 1000 // round_ms)
        fitted = max(1, min(rounds, affordable))
        return cls(candidate_calls, reference_calls, fitted, max(fitted, min(max_rounds, affordable)))


@dataclass(frozen=True)
class PairedReadings:
    """Calibrated and raw samples of the rounds used, and the reference as read in them."""

    calibrated_ms: list[float]
    raw_ms: list[float]
    window_reference_ms: float
    """Median of the reference blocks in these rounds: the host's speed in this window."""


ROUNDS_AGREE = 0.02
"""Undisturbed rounds whose candidate/reference ratios are within this of each other settle
the measurement before ``rounds`` of them. Measured on the four probe_cost artifacts at 1
and 2 threads (idle EPYC family 26 model 2, 2026-11-30, 32 probes of 3 rounds): where the
first two rounds agreed within 2 %, their median differed from the three rounds' by at
most 0.9 %; the first two differed by more than 2 % in 11 of 32 probes (up to 10 %), which
keep timing as before. It saves a round (0.47 s there) on most idle probes."""
MIN_AGREEING_ROUNDS = 2


def reference_around(timed_round: dict[str, list[list[float]]]) -> list[float]:
    """The reference's speed around each candidate block of a round: the mean of the
    reference block medians on either side (reference block ``i`` precedes candidate
    block ``i`` and block ``i + 1`` follows it)."""
    reference = [statistics.median(block) for block in timed_round["reference"]]
    return [(reference[i] + reference[i + 1]) / 2 for i in range(len(timed_round["candidate"]))]


def round_ratio(timed_round: dict[str, list[list[float]]]) -> float:
    """The round's candidate latency in units of the reference around it: the median over
    its blocks of block median / :func:`reference_around`."""
    return statistics.median(statistics.median(block) / around
                             for block, around in zip(timed_round["candidate"], reference_around(timed_round)))


def rounds_agree(clean_rounds: list[dict[str, list[list[float]]]]) -> bool:
    """Whether at least ``MIN_AGREEING_ROUNDS`` undisturbed rounds read within ``ROUNDS_AGREE``
    of each other (relative to the reference, so a host speed change does not count)."""
    if len(clean_rounds) < MIN_AGREEING_ROUNDS:
        return False
    ratios = [round_ratio(r) for r in clean_rounds]
    return max(ratios) <= (1 + ROUNDS_AGREE) * min(ratios)


def calibrate(rounds: list[dict[str, list[list[float]]]], reference_ms: float | None) -> PairedReadings:
    """Scale each candidate block by ``reference_ms`` / the reference around it.

    A round holds ``candidate`` blocks (lists of call times) and ``reference`` blocks, one
    more than candidate blocks: reference block ``i`` precedes candidate block ``i`` and
    block ``i + 1`` follows it. Without ``reference_ms`` the window's own median reference
    is the yardstick (drift within the window is still removed).
    """
    reference_medians = [statistics.median(block) for r in rounds for block in r["reference"]]
    window = statistics.median(reference_medians)
    target = reference_ms or window
    calibrated, raw = [], []
    for r in rounds:
        for block, around in zip(r["candidate"], reference_around(r)):
            calibrated.extend(ms * target / around for ms in block)
            raw.extend(block)
    return PairedReadings(calibrated, raw, window)
