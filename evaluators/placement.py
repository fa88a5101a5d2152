"""Where measurements run: on this host, or on the Ray nodes that stand for the target hardware.

``LocalPlacement`` runs the serving probe as a fresh process on this host (the host
timing lock serialises timed windows). ``RayPlacement`` sends latency and memory jobs as
Ray tasks that require one unit of a custom resource (``latency_bench`` by default):
only nodes started with it (``ray start --resources='{"latency_bench": 1}'``) receive
them, and with one unit per node at most one timed window runs there at a time.
Accuracy jobs need no such resource and run on any node. Files travel as bytes, so the
nodes share no filesystem with the driver; the measurement's hardware identity is the
bench node's, and ``node`` says which node it was.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable, Protocol

import torch

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.evaluators.accuracy import evaluate_accuracy
from slimsearch.evaluators.runtimes import load_artifact
from slimsearch.evaluators.rank_plans import RankPlan
from slimsearch.evaluators.serving import ServingMeasurement, TimingProtocol, measure_serving

Split = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]


class PlacementError(SlimsearchError, RuntimeError):
    """The configured placement cannot run measurements (no cluster, no bench node)."""


@dataclasses.dataclass(frozen=True)
class ServingRequest:
    """Everything a serving measurement needs besides the files of ``plan``."""

    batch: torch.Tensor
    """The rows every timed call serves (real validation rows, in the task's dtype)."""
    threads: int
    protocol: TimingProtocol
    timeout_s: float


class Placement(Protocol):
    def measure(self, artifact: Path, plan: RankPlan, request: ServingRequest) -> ServingMeasurement: ...

    def accuracy(self, artifact: Path, split: Split, metric: Metric) -> float: ...


class LocalPlacement:
    """Probe processes on this host; accuracy of the serving artifact in this process."""

    def measure(self, artifact: Path, plan: RankPlan, request: ServingRequest) -> ServingMeasurement:
        return measure_serving(artifact, plan, request.batch,
                               threads=request.threads, protocol=request.protocol, timeout_s=request.timeout_s)

    def accuracy(self, artifact: Path, split: Split, metric: Metric) -> float:
        # A compiled runtime's graph, uncompiled: the probe checks its compiled outputs against it.
        return evaluate_accuracy(load_artifact(artifact, compiled=False), split, metric)


class RayPlacement:
    """Latency/memory on nodes advertising ``bench_resource``; accuracy on any node."""

    def __init__(self, address: str | None = None, bench_resource: str = "latency_bench"):
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError) as exc:
                raise PlacementError(f"cannot join the Ray cluster at {address}: {exc}; check evaluation.ray_address") from exc
        if ray.cluster_resources().get(bench_resource, 0) < 1:
            raise PlacementError(
                f"no Ray node advertises the '{bench_resource}' resource; start the benchmark node with "
                f"ray start --resources='{{\"{bench_resource}\": 1}}' or set evaluation.placement: local"
            )
        self._measure = ray.remote(num_cpus=0, resources={bench_resource: 1}, max_retries=0)(_measure_on_node)
        self._accuracy = ray.remote(num_cpus=1, max_retries=0)(_accuracy_on_node)

    def measure(self, artifact: Path, plan: RankPlan, request: ServingRequest) -> ServingMeasurement:
        import ray

        files = {Path(f).name: Path(f).read_bytes() for f in {str(artifact), *plan.rank_files}}
        measurement = ray.get(self._measure.remote(files, artifact.name, plan, request))
        for path in {Path(f) for f in plan.rank_files} - {artifact}:
            path.unlink(missing_ok=True)  # as measure_serving does on the local path
        return measurement

    def accuracy(self, artifact: Path, split: Split, metric: Metric) -> float:
        import ray

        return float(ray.get(self._accuracy.remote(artifact.read_bytes(), artifact.suffix, split, metric)))


def _measure_on_node(files: dict[str, bytes], artifact_name: str, plan: RankPlan, request: ServingRequest) -> ServingMeasurement:
    import ray

    with tempfile.TemporaryDirectory(prefix="slimsearch-remote-") as workdir:
        local = {name: Path(workdir) / name for name in files}
        for name, data in files.items():
            local[name].write_bytes(data)
        local_plan = dataclasses.replace(plan, rank_files=[str(local[Path(f).name]) for f in plan.rank_files])
        measurement = LocalPlacement().measure(local[artifact_name], local_plan, request)
    hardware = {**measurement.hardware, "node": ray.get_runtime_context().get_node_id()}
    return dataclasses.replace(measurement, hardware=hardware)


def _accuracy_on_node(artifact: bytes, suffix: str, split: Split, metric: Metric) -> float:
    with tempfile.NamedTemporaryFile(suffix=suffix) as file:
        file.write(artifact)
        file.flush()
        return LocalPlacement().accuracy(Path(file.name), split, metric)
