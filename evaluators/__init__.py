"""Measure a compressed model: accuracy, latency, memory, on the serving plan it would use.

``accuracy`` runs in the trial's process (it may overlap other trials); latency and
memory run in an isolated ``serving_probe`` process that holds a per-host timing lock
(``isolation``) so concurrent trials never time at the same moment, and that really
executes the parallel strategy over gloo ranks: ``rank_plans`` prepares what each
rank loads, ``parallel_steps`` is one served request per strategy, and the probe
checks parallel outputs against the single-process model. ``placement`` decides where
evaluators run: this host, or Ray nodes advertising a ``latency_bench`` resource.
``runtimes`` holds the serving runtimes (TorchScript, onnxruntime, torch.compile,
OpenVINO): what a candidate's artifact is, and how it is loaded to be measured.
"""

from slimsearch.evaluators.accuracy import evaluate_accuracy, predict
from slimsearch.evaluators.isolation import hardware_identity
from slimsearch.evaluators.latency import LatencyStats
from slimsearch.evaluators.placement import LocalPlacement, Placement, PlacementError, RayPlacement, ServingRequest
from slimsearch.evaluators.rank_plans import RankPlan, plan_ranks
from slimsearch.evaluators.runtimes import ServingRuntime, load_artifact, save_artifact, serving_runtime
from slimsearch.evaluators.serving import (
    MeasurementError,
    ServingMeasurement,
    TimingProtocol,
    measure_serving,
)

__all__ = [
    "LatencyStats",
    "LocalPlacement",
    "MeasurementError",
    "Placement",
    "PlacementError",
    "RankPlan",
    "RayPlacement",
    "ServingMeasurement",
    "ServingRuntime",
    "ServingRequest",
    "TimingProtocol",
    "evaluate_accuracy",
    "hardware_identity",
    "load_artifact",
    "measure_serving",
    "plan_ranks",
    "predict",
    "save_artifact",
    "serving_runtime",
]
