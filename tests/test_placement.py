"""Evaluator placement on a Ray cluster simulated on this machine (two real Ray nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimsearch.evaluators import (
    LocalPlacement,
    PlacementError,
    RayPlacement,
    ServingRequest,
    TimingProtocol,
    plan_ranks,
    save_artifact,
)
from slimsearch.pipelines.digits import DigitsCNN
from slimsearch.pipelines.task import top1_accuracy

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head node without the bench resource and one bench node with ``latency_bench: 1``."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    bench = cluster.add_node(num_cpus=1, resources={"latency_bench": 1})
    cluster.wait_for_nodes()
    yield bench.node_id
    ray.shutdown()
    cluster.shutdown()


def test_latency_jobs_land_only_on_the_bench_node_and_accuracy_runs_anywhere(two_node_cluster: str, tmp_path: Path) -> None:
    placement = RayPlacement()
    request = ServingRequest(torch.randn(16, *SHAPE), 1, TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=2), 120)
    split = (torch.randn(40, *SHAPE), torch.randint(0, 10, (40,)))
    for width in (0.25, 0.5, 1.0):
        torch.manual_seed(0)
        model = DigitsCNN(width, 2).eval()
        example = torch.randn(16, *SHAPE)
        artifact = save_artifact("torch", model, example, tmp_path / f"w{width}.pt")
        plan = plan_ranks(model, example, "pipeline_parallel", 2, artifact)
        measurement = placement.measure(artifact, plan, request)
        assert measurement.hardware["node"] == two_node_cluster
        assert measurement.latency.p50_ms > 0 and measurement.output_error < 1e-4
        assert not any(Path(f).exists() for f in plan.rank_files if f != str(artifact)), "stage files cleaned up"
        assert placement.accuracy(artifact, split, top1_accuracy) == LocalPlacement().accuracy(artifact, split, top1_accuracy)


def test_a_cluster_without_the_bench_resource_is_a_clear_error(two_node_cluster: str) -> None:
    with pytest.raises(PlacementError, match="no Ray node advertises the 'gpu_bench' resource"):
        RayPlacement(bench_resource="gpu_bench")
