"""Latency and memory of serving a model, measured in an isolated probe process.

The serving artifact (one file in the format of its runtime, see ``runtimes``) is
handed to a fresh ``serving_probe`` process (started ahead of its job:
``probe_processes``), so memory is measured against a clean baseline and the timed
window holds the host lock. Memory is the peak RSS of all serving processes minus the
baseline of one idle torch process and minus the library pages faulted in while serving
(shared code, see ``memory``): the extra ranks of a parallel plan count in full,
because deploying them costs that much. What each rank loads is prepared by
``rank_plans``; the plan's extra files are removed once measured.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from slimsearch.evaluators.latency import LatencyStats
from slimsearch.evaluators.paired_timing import calibrate, scaled_to_window
from slimsearch.evaluators.probe_processes import ProbeProcesses
from slimsearch.evaluators.rank_plans import RankPlan
from slimsearch.evaluators.serving_probe import ServingJob, job_dict

MB = 1024 * 1024

# glibc hands large freed blocks back to the OS (mmap'd allocations, heap trimming), so a
# fresh process page-faults on every call for tensors above its thresholds: the same
# Transformer artifact read 4.1-6.7 ms p50 across ten probes (CV 16 %), 4.1-4.4 ms with
# these set, like a long-running server whose heap has settled.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(256 * MB), "MALLOC_TRIM_THRESHOLD_": str(256 * MB)}
PROBES = ProbeProcesses(STEADY_MALLOC)
atexit.register(PROBES.close)


TIMING_SHARE = 0.8
"""Share of the timeout by which timing must be over; the rest is for the output check and exit."""


class MeasurementError(RuntimeError):
    """The probe failed or timed out; the message is recorded as the trial's failure reason."""


@dataclass(frozen=True)
class TimingProtocol:
    """How latency is timed: ``warmup_s`` of untimed calls, then rounds of ``round_s``
    seconds of candidate calls paired with the reference workload (``paired_timing``),
    until ``rounds`` undisturbed ones (outside load on the rank's cores <=
    ``max_outside_load``; two that agree within ``paired_timing.ROUNDS_AGREE`` settle it
    sooner) or ``max_rounds`` in all, pausing up to ``busy_wait_s`` in all
    after disturbed rounds. ``reference_ms`` is the study's calibrated reference latency
    at the candidate's thread count (None: this window's own). ``calibrate_threads``
    asks the probe to time the reference at those thread counts too, after the window
    (the study's baseline does, to calibrate every count the space serves)."""

    warmup_s: float = 0.3
    round_s: float = 0.3
    rounds: int = 3
    max_rounds: int = 6
    max_outside_load: float = 0.2
    busy_wait_s: float = 20.0
    reference_ms: float | None = None
    calibrate_threads: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServingMeasurement:
    latency: LatencyStats
    """From the undisturbed rounds of rank 0 (all rounds if none was undisturbed), each
    block scaled to the reference's calibrated speed (``paired_timing``)."""
    raw_latency: LatencyStats
    """The same calls as timed, unscaled."""
    window_reference_ms: float
    """The reference workload's median in this window (raw)."""
    host_slowdown: float
    """Window reference / calibrated reference: 1.3 = the host ran 30 % slower than when
    the study calibrated (the calibrated latency has that taken out)."""
    reference_by_threads: dict[int, float]
    """The reference's latency at each of ``protocol.calibrate_threads``, at this
    window's speed (empty when none was asked for)."""
    rounds_clean: int
    rounds_total: int
    outside_load_max: float
    """Highest outside load among the rounds the statistics come from."""
    noisy: bool
    """Fewer undisturbed rounds than asked for, and those there were did not agree: treat
    the latency with suspicion."""
    memory_bytes: int
    per_rank_peak_bytes: list[int]
    memory_spread_bytes: int
    """Largest minus smallest per-call peak over the later half of rank 0's warm-up: how far
    the memory reading moves."""
    per_rank_weight_bytes: list[int]
    output_error: float
    """Largest difference from the single-process model (a compiled program: from itself
    uncompiled), relative to its largest logit."""
    first_call_s: float
    """Rank 0's first request: cold start, including torch.compile's compilation."""
    baseline_bytes: int
    windows_ns: list[tuple[int, int]]
    lock_wait_s: float
    hardware: dict[str, str]

    @property
    def memory_mb(self) -> float:
        return self.memory_bytes / MB


def measure_serving(
    artifact: Path,
    plan: RankPlan,
    batch: torch.Tensor,
    *,
    threads: int,
    protocol: TimingProtocol,
    timeout_s: float,
) -> ServingMeasurement:
    """Serve ``artifact`` as ``plan`` says in the probe and return the measurement, or
    raise MeasurementError (probe crash, timeout, parallel outputs off the reference)."""
    if any(count > threads for count in protocol.calibrate_threads):
        raise ValueError(f"the reference can be calibrated at up to {threads} threads here (the probe's cores), "
                         f"not {max(protocol.calibrate_threads)}")
    batch_path = artifact.with_suffix(".batch.pt")
    torch.save(batch, batch_path)
    progress_path = artifact.with_suffix(".progress.json")
    job = ServingJob(str(artifact), plan.rank_files, str(batch_path), plan.strategy, plan.degree,
                     threads, protocol.warmup_s, protocol.round_s, protocol.rounds, protocol.max_rounds,
                     protocol.max_outside_load, protocol.busy_wait_s, str(progress_path),
                     time.time() + TIMING_SHARE * timeout_s, plan.micro_batches, plan.boundaries,
                     sorted({*protocol.calibrate_threads, threads}) if protocol.calibrate_threads else [])
    job_path = artifact.with_suffix(".job.json")
    result_path = artifact.with_suffix(".result.json")
    job_path.write_text(json.dumps(job_dict(job)))
    result_path.unlink(missing_ok=True)
    try:
        _run_probe(job_path, result_path, progress_path, timeout_s)
        measurement = _parse(json.loads(result_path.read_text()), protocol, plan)
    finally:
        for path in (job_path, result_path, batch_path, progress_path,
                     *{Path(f) for f in plan.rank_files} - {artifact}):
            path.unlink(missing_ok=True)
    if measurement.output_error > plan.tolerance:
        raise MeasurementError(
            f"{plan.strategy} x{plan.degree} outputs differ from the "
            f"{'single-process model' if plan.degree > 1 else 'uncompiled program'} by "
            f"{measurement.output_error:.2g} of the largest logit (tolerance {plan.tolerance:g})"
        )
    return measurement


def _run_probe(job_path: Path, result_path: Path, progress_path: Path, timeout_s: float) -> None:
    process = PROBES.take()
    try:
        _, stderr = process.communicate(input=f"{job_path}\n{result_path}\n", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise MeasurementError(f"serving probe timed out after {timeout_s:.0f}s (evaluation.timeout_s) while "
                               f"{_last_phase(progress_path)}") from None
    except BaseException:  # Ctrl-C reaches only us (the probe has its own session): take it down too
        _kill_group(process)
        raise
    if process.returncode != 0 or not result_path.exists():
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise MeasurementError(f"serving probe failed (exit {process.returncode}): {last[0][:300]}")
    PROBES.start_spare()


def _last_phase(progress_path: Path) -> str:
    """What the probe was doing when it was killed, as it last wrote it."""
    try:
        return str(json.loads(progress_path.read_text())["phase"])
    except (OSError, ValueError, KeyError):
        return "starting (python and torch had not loaded yet)"


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def _parse(result: dict, protocol: TimingProtocol, plan: RankPlan) -> ServingMeasurement:
    ranks = sorted(result["ranks"], key=lambda r: r["rank"])
    rounds = ranks[0]["rounds"]
    clean = [r for r in rounds if r["outside_load"] <= protocol.max_outside_load]
    used = clean or rounds
    readings = calibrate(used, protocol.reference_ms)
    speeds, threads = ranks[0].get("reference_speeds"), int(result["hardware"]["threads_per_rank"])
    peaks = [int(r["peak_bytes"]) for r in ranks]
    baseline = int(ranks[0]["baseline_bytes"])
    # Library pages faulted in while serving are shared code, not the model's memory.
    file_growth = sum(int(r["file_growth_bytes"]) for r in ranks)
    return ServingMeasurement(
        latency=LatencyStats.from_samples(readings.calibrated_ms),
        raw_latency=LatencyStats.from_samples(readings.raw_ms),
        window_reference_ms=readings.window_reference_ms,
        host_slowdown=readings.window_reference_ms / (protocol.reference_ms or readings.window_reference_ms),
        reference_by_threads=scaled_to_window({int(t): ms for t, ms in speeds.items()}, threads,
                                              readings.window_reference_ms) if speeds else {},
        rounds_clean=len(clean),
        rounds_total=len(rounds),
        outside_load_max=max(r["outside_load"] for r in used),
        noisy=not ranks[0]["settled"],
        memory_bytes=max(0, sum(peaks) - file_growth - baseline),
        per_rank_peak_bytes=peaks,
        memory_spread_bytes=int(ranks[0]["memory_spread_bytes"]),
        per_rank_weight_bytes=plan.weight_bytes or [int(r["weight_bytes"]) for r in ranks],
        output_error=(ranks[0]["output_error"] or {"relative": 0.0})["relative"],
        first_call_s=float(ranks[0]["first_call_s"]),
        baseline_bytes=baseline,
        windows_ns=[tuple(r["window_ns"]) for r in ranks],
        lock_wait_s=float(result["lock_wait_s"]),
        hardware=result["hardware"],
    )
