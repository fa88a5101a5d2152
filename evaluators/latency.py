"""Latency statistics from repeated timed calls.

Each call is timed on its own (``perf_counter_ns``) after a warm-up, so the report has
percentiles and a coefficient of variation, not just a mean that hides outliers.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    cv: float
    """Coefficient of variation (std / mean) of the timed calls."""
    repeats: int
    p50_ci_low_ms: float
    """95 % bootstrap confidence interval of the median (percentile method)."""
    p50_ci_high_ms: float
    p95_ci_low_ms: float = 0.0
    """95 % bootstrap confidence interval of the 95th percentile."""
    p95_ci_high_ms: float = 0.0

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        if len(samples_ms) < 2:
            raise ValueError("need at least two timed calls for latency statistics")
        ordered = sorted(samples_ms)
        mean = statistics.fmean(ordered)
        low, high = _bootstrap_ci(ordered, 50)
        low95, high95 = _bootstrap_ci(ordered, 95)
        return cls(
            p50_ms=statistics.median(ordered),
            p95_ms=_percentile(ordered, 0.95),
            p99_ms=_percentile(ordered, 0.99),
            mean_ms=mean,
            cv=statistics.stdev(ordered) / mean if mean > 0 else 0.0,
            repeats=len(ordered),
            p50_ci_low_ms=low,
            p50_ci_high_ms=high,
            p95_ci_low_ms=low95,
            p95_ci_high_ms=high95,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _bootstrap_ci(samples: list[float], percentile: float, resamples: int = 1000) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the samples' ``percentile``."""
    rng = np.random.default_rng(0)  # fixed: the same samples always give the same interval
    resampled = rng.choice(np.asarray(samples), size=(resamples, len(samples)), replace=True)
    estimates = np.percentile(resampled, percentile, axis=1)
    return float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))


def _percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples
