"""Latency as a deployment's fixed overhead plus its cost per unit of work.

A served model's latency is the sum of what every call pays whatever the model (the
runtime's dispatch, per-layer overheads) and what grows with its work (MACs, parameters);
both depend on the deployment (runtime, precision, strategy, threads). A Gaussian process
on the logs of the features models a product well (torch reads a power of MACs) but not
that sum: on the digits table onnxruntime pays ~0.1 ms fixed plus ~0.7 ms per million
MACs at 2 threads, and int8 onnxruntime ~0.7 ms fixed. Fitted per deployment on every row
(a scratch script, 2026-11-30; ``structure_floor`` in ``benchmarks/search_quality.py``
prints the better of the two overall), a sum of overhead and work misses onnxruntime fp32
by 7.6-8.8 % where a product misses by 13.5-15.2 %.

This model is that sum, with the deployment's overhead and cost per unit of work each the
exponential of a linear function of the deployment's features (so they are positive and
shared where deployments share a runtime, a precision or a thread count), fitted by least
squares on log latency with a ridge penalty pulling every deployment's terms towards the
common ones (about two measured rows per deployment after 20 trials: without it the
terms chase noise). Its predictions, averaged (geometrically) with the Gaussian process's,
cut the predictor's latency error after 20 trials on the digits table from 16.1 to 12.7 %
and on digits-transformer from 13.3 to 10.2 % (median of 20 orders; the model alone: 12.9
and 10.6 %). Its weak spot is the same penalty: a deployment measured only on large models
borrows its overhead from the others, so its small models can be predicted several times
too slow (on a synthetic draw where torch was measured only above 90k MACs: 60 % error on
smaller torch models) -- one reason it is averaged with the GP, never used alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from slimsearch.spaces import STRATEGIES, Candidate, runtime_specs

RIDGE = 0.1
"""Penalty on each deployment term's distance from the common one (and of the work's
exponents from 1 for MACs, 0 for parameters), in units of squared log latency. Chosen as a
round value on the digits table: 0.03 read 12.5 %, 0.3 read 15.5 %, 1.0 read 26 %
(the model alone, median of 20 orders)."""
PRECISIONS = ("fp32", "float16", "bfloat16", "int8")


def precision(candidate: Candidate) -> str:
    """The kernel family the candidate runs (one of ``PRECISIONS``): a simulated bit width
    runs fp32 kernels (:func:`served_bits`)."""
    if served_bits(candidate) == 32:
        return "fp32"
    if candidate.bits == 8:
        return "int8"
    if candidate.bits == 16:
        return candidate.float_dtype or "float16"
    return "fp32"


def served_bits(candidate: Candidate) -> int:
    """The bit width the candidate's kernels run at: fake-quant below 8 bits serves float32
    weights, so its speed is fp32's (the digits table's int4-simulated rows read within
    0.5 % of fp32's, median per deployment). Pricing it as its own precision split the
    few measured rows of a deployment in two: latency MAPE after 20 trials 14.8 -> 12.0 %
    on the digits table re-measured 2026-11-30, 10.2 -> 9.1 % on digits-transformer."""
    return 32 if candidate.simulated else candidate.bits


def deployment_features(candidate: Candidate) -> np.ndarray:
    """The deployment as numbers: a common term, the runtime, the precision, both together,
    threads (also per runtime), the strategy and its degree."""
    runtime = [1.0 if candidate.runtime == spec.name else 0.0 for spec in runtime_specs()]
    kind = [1.0 if precision(candidate) == name else 0.0 for name in PRECISIONS]
    threads = math.log(candidate.threads)
    return np.array([1.0, *runtime, *kind, *(r * k for r in runtime for k in kind), threads,
                     *(r * threads for r in runtime), *(1.0 if candidate.strategy == s else 0.0 for s in STRATEGIES),
                     math.log(candidate.degree)])


def overhead_features(candidate: Candidate) -> np.ndarray:
    """What the fixed overhead scales with besides the deployment: the layers."""
    student = candidate.student
    return np.array([1.0 if student is None else 0.0, 0.0 if student is None else math.log(student.depth)])


@dataclass
class OverheadAndWork:
    """``latency = exp(d . u + s . p) + exp(d . v + w . q)``: overhead plus work, with ``d``
    the deployment's features, ``s`` the layers, ``w`` log MACs and log parameters."""

    coefficients: np.ndarray
    used: np.ndarray
    """Which of :func:`deployment_features` the fit used (the others are zero)."""

    @classmethod
    def fit(cls, candidates: list[Candidate], structures: list[tuple[float, float]],
            latencies: list[float]) -> OverheadAndWork:
        """Fitted to the measured ``latencies``. A deployment feature no candidate has (a runtime,
        precision or strategy the study has not measured) is left out of the fit, where the
        penalty would hold it at zero anyway: each iteration is an SVD of the Jacobian, and
        the unused columns were most of it."""
        all_deployments = np.array([deployment_features(c) for c in candidates])
        used = np.any(all_deployments != 0, axis=0)
        deployments = all_deployments[:, used]
        layers = np.array([overhead_features(c) for c in candidates])
        work = np.log(np.maximum(np.array(structures, dtype=float), 1.0))
        target = np.log(np.array(latencies))
        width = deployments.shape[1]
        prior = np.zeros(2 * width + 4)
        prior[0], prior[width] = math.log(float(np.min(latencies))), target.mean() - work[:, 0].mean()
        prior[2 * width + 2] = 1.0  # latency proportional to MACs, by default
        penalised = np.ones_like(prior, dtype=bool)
        penalised[[0, width]] = False  # the common overhead and cost per MAC are free
        ridge = math.sqrt(RIDGE) * np.eye(len(prior))[penalised]

        def residuals(theta: np.ndarray) -> np.ndarray:
            fitted = cls(theta, used)._log_latency(deployments, layers, work)
            return np.concatenate([fitted - target, ridge @ (theta - prior)])

        def jacobian(theta: np.ndarray) -> np.ndarray:
            overhead, per_work = cls(theta, used)._terms(deployments, layers, work)
            share = expit(overhead - per_work)[:, None]  # d logaddexp(a, b) / da
            rows = np.hstack([share * deployments, (1 - share) * deployments, share * layers, (1 - share) * work])
            return np.vstack([rows, ridge])

        return cls(least_squares(residuals, prior, jac=jacobian).x, used)

    def latency(self, candidate: Candidate, macs: float, params: float) -> float:
        work = np.log(np.maximum(np.array([[macs, params]], dtype=float), 1.0))
        deployment = deployment_features(candidate)[self.used][None]
        return float(np.exp(self._log_latency(deployment, overhead_features(candidate)[None], work)[0]))

    def _log_latency(self, deployments: np.ndarray, layers: np.ndarray, work: np.ndarray) -> np.ndarray:
        return np.logaddexp(*self._terms(deployments, layers, work))

    def _terms(self, deployments: np.ndarray, layers: np.ndarray, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The logs of the overhead and of the work's cost."""
        width, theta = int(self.used.sum()), self.coefficients
        return (deployments @ theta[:width] + layers @ theta[2 * width:2 * width + 2],
                deployments @ theta[width:2 * width] + work @ theta[2 * width + 2:])
