"""A latency/memory predictor learned online from the trials a search has measured.

Latency and memory follow a candidate's structure (the work and size of its model, bit
width) and its deployment (runtime, strategy, ranks, threads), roughly as a
product of them (work x width x depth x kept channels / threads). A Gaussian process
(scikit-learn) on the logs of those features, refitted after every measured trial,
predicts the log of each objective -- a product becomes a sum it learns from few trials
(a random forest needed twice the trials for the same error on a synthetic cost model)
-- and its posterior standard deviation is the uncertainty. Its kernel is a linear term
(that sum) plus an anisotropic RBF (what is not a product: a runtime's fixed overhead)
plus noise: the linear term cut the error after 20 trials in 37 of 50 random orders of
the digits table (median latency MAPE 51.8 -> 46.2 %, memory 13.8 -> 13.1 %) and of
digits-transformer (31.4 -> 27.6 %, 11.6 -> 9.7 %); a slope of log threads and of log
bits per runtime cut it again on the tables re-measured with paired timing (digits 29.0 ->
24.2 %, digits-transformer 14.7 -> 12.6 %, medians of 20 orders). The model is described by
its MACs and parameters (estimated on an untrained copy before it is built, the built
model's once measured) instead of width and pruning ratio, features standardised: on the
tables re-measured with aligned pruning, latency 24.1 -> 16.1 % on digits and 12.6 -> 13.3 %
on digits-transformer, memory 12.9 -> 12.1 % and 9.4 -> 8.2 % (adding width and ratio back:
17.2 / 12.5 % latency, 13.3 / 11.1 % memory). Latency is then averaged (in logs) with a
model of a deployment's fixed overhead plus its cost per unit of work (``cost_model.py``),
which the GP on logs cannot represent: 16.1 -> 12.7 % on digits, 13.3 -> 10.2 % on
digits-transformer. A run of 100 trials or more first learns the study's deployment
calibration -- the teacher and the smallest model timed at every deployment
(``calibration.py``): 12.0 -> 8.3 % on digits, 9.6 -> 7.2 % on digits-transformer after 20
trials. A simulated bit width is described as the fp32 it runs
(``cost_model.served_bits``). Every prediction is made
*before* the trial is measured and compared with the measurement afterwards, so the error
it reports (MAPE per objective over the last ``WINDOW`` trials) is an honest out-of-sample
figure. It informs (progress line, MLflow parent metrics, the benchmark); it never
replaces a measurement.

Re-optimising the kernel's hyperparameters costs seconds (two GPs, 17 length scales);
done after every trial it outgrew the trials themselves. They are re-optimised when the
training set has grown by a quarter since the last time (often early, when they change
most) and every ``REOPTIMISE_EVERY`` trials once the set is full; in between the model is
refitted with the kernel it has (milliseconds). Fits run on one BLAS thread, so they do
not take the cores a concurrent measurement runs on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from slimsearch.search.loop.cost_model import OverheadAndWork, served_bits
from slimsearch.search.objectives import LATENCY_P50_MS, MACS, MEMORY_MB, PARAMS
from slimsearch.spaces import STRATEGIES, Candidate, runtime_specs

PREDICTED = (LATENCY_P50_MS, MEMORY_MB)
MIN_TRIALS = 8
"""Trials measured before the first prediction."""
WINDOW = 20
"""Predictions the reported error is averaged over (the most recent)."""
MAX_ROWS = 200
"""Trials a fit uses (the most recent): a GP's fit grows with the cube of its rows, and a
resumed study of thousands of trials must not stall every trial on it."""
GROWTH_BEFORE_REOPTIMISING = 1.25
REOPTIMISE_EVERY = 50


def features(candidate: Candidate, macs: float, params: float) -> list[float]:
    """Numbers describing what fixes a candidate's cost: the work and size of its model
    (``macs``, ``params``: :meth:`CompressionPipeline.structure`) and its deployment."""
    student = candidate.student
    return [
        math.log(max(macs, 1.0)),
        math.log(max(params, 1.0)),
        # Per-layer overhead beyond the work (a transformer's attention and norms).
        0.0 if student is None else math.log(student.depth),
        1.0 if student is None else 0.0,
        math.log(served_bits(candidate)),
        1.0 if candidate.float_dtype == "bfloat16" else 0.0,
        math.log(candidate.threads),
        math.log(candidate.degree),
        *(1.0 if candidate.runtime == spec.name else 0.0 for spec in runtime_specs()),
        *(1.0 if candidate.strategy == name else 0.0 for name in STRATEGIES),
        # What a second thread or int8 buys differs per runtime (digits table, median over
        # models, 2 threads vs 1: int8 torch 1.78x faster, int8 onnxruntime 1.09x): a slope each.
        *(math.log(value) if candidate.runtime == spec.name else 0.0
          for spec in runtime_specs() for value in (candidate.threads, served_bits(candidate))),
    ]


Structure = Callable[[Candidate], tuple[float, float]]
"""A candidate's MACs and parameters before it is built (the pipeline's estimate)."""


@dataclass
class CostPredictor:
    structure: Structure
    seed: int = 0
    rows: list[list[float]] = field(default_factory=list)
    targets: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PREDICTED})
    errors: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PREDICTED})
    _models: dict[str, GaussianProcessRegressor] = field(default_factory=dict)
    _learned: int = 0
    """Trials learned so far (rows beyond ``MAX_ROWS`` are dropped)."""
    _optimised_at: int = 0
    """``_learned`` when the hyperparameters were last optimised."""
    observed: list[tuple[Candidate, tuple[float, float]]] = field(default_factory=list)
    """The candidates of ``rows`` with their MACs and parameters (the latency cost model's data)."""
    _cost_model: OverheadAndWork | None = None
    _scaler: StandardScaler = field(default_factory=StandardScaler)
    """Features standardised as when the kernel was optimised: log MACs of ~1e6 beside
    one-hot flags left the linear term's offset so large that the kernel matrix lost
    positive definiteness."""

    def predict(self, candidate: Candidate) -> dict[str, tuple[float, float]] | None:
        """``{objective: (prediction, relative uncertainty)}``, or ``None`` until trained."""
        if not self._models:
            return None
        if (structure := self._structure(candidate, {})) is None:
            return None
        row = self._scaler.transform(np.array([features(candidate, *structure)]))
        predicted = {}
        for name, model in self._models.items():
            mean, std = model.predict(row, return_std=True)
            log_value = float(mean[0])
            if name == LATENCY_P50_MS and self._cost_model is not None:
                # The GP (a product of the features) and the overhead-plus-work sum, averaged
                # in logs: each alone missed more (module docstring of cost_model).
                log_value = (log_value + math.log(self._cost_model.latency(candidate, *structure))) / 2
            seen = self.targets[name]
            # Far from its data a GP on ~20 noisy rows can extrapolate a log-latency to 20x
            # anything measured; a cost outside what was measured by more than 2x is not claimed.
            bounded = min(max(log_value, min(seen) - math.log(2)), max(seen) + math.log(2))
            predicted[name] = (float(math.exp(bounded)), float(math.expm1(std[0])))
        return predicted

    def latency(self, candidate: Candidate) -> float | None:
        """The predicted latency p50 of ``candidate`` (ms), or ``None`` until trained: what
        orders a new model's deployment variants, fastest first."""
        predicted = self.predict(candidate)
        return None if predicted is None else predicted[LATENCY_P50_MS][0]

    def learn(self, candidate: Candidate, metrics: dict[str, float],
              predicted: dict[str, tuple[float, float]] | None, refit: bool = True) -> None:
        """Record a measured trial (and the error of what was predicted for it), then refit
        (``refit=False`` while replaying a resumed study's trials: :meth:`refit` once after)."""
        if not all(metrics.get(name, 0) > 0 for name in PREDICTED):
            return  # a zero reading (e.g. memory below resolution) has no log
        if (structure := self._structure(candidate, metrics)) is None:
            return
        for name, (value, _) in (predicted or {}).items():
            self.errors[name].append(abs(value - metrics[name]) / metrics[name])
        self.rows = [*self.rows[-(MAX_ROWS - 1):], features(candidate, *structure)]
        self.observed = [*self.observed[-(MAX_ROWS - 1):], (candidate, structure)]
        for name in PREDICTED:
            self.targets[name] = [*self.targets[name][-(MAX_ROWS - 1):], math.log(metrics[name])]
        self._learned += 1
        if refit:
            self.refit()

    def _structure(self, candidate: Candidate, metrics: dict[str, float]) -> tuple[float, float] | None:
        """The MACs and parameters of what was built (recorded with the trial) where known, else
        the pipeline's estimate; ``None`` when neither can be had (an architecture the task
        cannot build is a failed trial, not a failed search)."""
        if MACS in metrics and PARAMS in metrics:
            return metrics[MACS], metrics[PARAMS]
        try:
            return self.structure(candidate)
        except Exception:  # noqa: BLE001 - any error of the task's own architecture code
            return None

    def refit(self) -> None:
        if len(self.rows) < MIN_TRIALS:
            return
        full = len(self.rows) >= MAX_ROWS
        optimise = (not self._models or self._learned >= GROWTH_BEFORE_REOPTIMISING * self._optimised_at
                    or (full and self._learned - self._optimised_at >= REOPTIMISE_EVERY))
        if optimise:
            self._scaler.fit(np.array(self.rows))
        with threadpool_limits(limits=1):
            self._models = {name: self._fit(values, self._models.get(name) if not optimise else None)
                            for name, values in self.targets.items()}
            self._cost_model = OverheadAndWork.fit([c for c, _ in self.observed], [s for _, s in self.observed],
                                                   [math.exp(v) for v in self.targets[LATENCY_P50_MS]])
        if optimise:
            self._optimised_at = self._learned

    def _fit(self, values: list[float], fitted: GaussianProcessRegressor | None) -> GaussianProcessRegressor:
        """A GP on the kept rows: with ``fitted``'s kernel as it is, else with hyperparameters optimised."""
        if fitted is not None:
            model = GaussianProcessRegressor(fitted.kernel_, optimizer=None, normalize_y=True, random_state=self.seed)
        else:
            width = len(self.rows[0])
            kernel = DotProduct() + ConstantKernel() * RBF(length_scale=np.ones(width), length_scale_bounds=(1e-2, 1e3)) \
                + WhiteKernel(noise_level=1e-2, noise_level_bounds=(1e-6, 1.0))
            model = GaussianProcessRegressor(kernel, normalize_y=True, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # bounds reached on tiny samples: still a fit
            return model.fit(self._scaler.transform(np.array(self.rows)), np.array(values))

    def mape(self) -> dict[str, float]:
        """Mean absolute percentage error of the last ``WINDOW`` out-of-sample predictions."""
        return {name: 100 * float(np.mean(errors[-WINDOW:])) for name, errors in self.errors.items() if errors}

    def describe(self) -> str:
        mape = self.mape()
        return ("predictor MAPE " + ", ".join(f"{name.split('_')[0]} {value:.0f} %" for name, value in mape.items())
                if mape else "")
