"""Parallel strategies really executed over gloo ranks: outputs, per-rank memory, rejections."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimsearch.evaluators import MeasurementError, TimingProtocol, measure_serving, plan_ranks, save_artifact
from slimsearch.evaluators.rank_plans import RankPlan
from slimsearch.pipelines.digits import DigitsCNN
from slimsearch.pipelines.digits_transformer import DigitsTransformer
from slimsearch.pipelines.quantize import quantize
from slimsearch.spaces import InvalidCandidate

SHAPE = (1, 16, 16)
BATCH = 16


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return (DigitsTransformer(width=0.5, depth=2) if kind == "transformer" else DigitsCNN(width=0.25, depth=3)).eval()


def _serve(model: torch.nn.Module, strategy: str, tmp_path: Path, degree: int = 2) -> object:
    example = torch.randn(BATCH, *SHAPE)
    artifact = save_artifact("torch", model, example, tmp_path / f"{strategy}.pt")
    plan = plan_ranks(model, example, strategy, 1 if strategy == "single" else degree, artifact)
    return measure_serving(artifact, plan, example, threads=1, timeout_s=120,
                           protocol=TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=2))


@pytest.mark.parametrize(
    ("kind", "strategy"),
    [("transformer", "data_parallel"), ("transformer", "tensor_parallel"), ("transformer", "pipeline_parallel"),
     ("cnn", "pipeline_parallel")],
)
def test_parallel_outputs_match_the_single_process_model(kind: str, strategy: str, tmp_path: Path) -> None:
    result = _serve(_model(kind), strategy, tmp_path)
    assert result.output_error < 1e-4, "float32 ranks must reproduce the single-process logits"
    assert len(result.per_rank_peak_bytes) == 2 and min(result.per_rank_peak_bytes) > 0
    assert len(result.per_rank_weight_bytes) == 2 and result.latency.p50_ms > 0


def test_tensor_parallel_ranks_hold_about_half_the_weights(tmp_path: Path) -> None:
    model = _model("transformer")
    single = _serve(model, "single", tmp_path).per_rank_weight_bytes[0]
    sharded = _serve(model, "tensor_parallel", tmp_path).per_rank_weight_bytes
    # Embedding, norms and head stay replicated, so a little more than half.
    assert all(0.4 < rank / single < 0.65 for rank in sharded), (single, sharded)


def test_pipeline_stages_split_the_weights_between_ranks(tmp_path: Path) -> None:
    model = _model("transformer")
    example = torch.randn(BATCH, *SHAPE)
    plan = plan_ranks(model, example, "pipeline_parallel", 2, save_artifact("torch", model, example, tmp_path / "m.pt"))
    stages = [torch.jit.load(path) for path in plan.rank_files]
    with torch.no_grad():
        torch.testing.assert_close(stages[1](stages[0](example)), model(example), rtol=1e-5, atol=1e-5)
    assert all(weights < sum(plan.weight_bytes) * 0.75 for weights in plan.weight_bytes), plan.weight_bytes
    assert plan.micro_batches == 4


def test_wrong_rank_outputs_are_a_failed_measurement(tmp_path: Path) -> None:
    model, impostor = _model("transformer"), DigitsTransformer(width=0.5, depth=2).eval()
    example = torch.randn(BATCH, *SHAPE)
    artifact = save_artifact("torch", model, example, tmp_path / "m.pt")
    other = save_artifact("torch", impostor, example, tmp_path / "other.pt")
    plan = RankPlan("data_parallel", 2, [str(artifact), str(other)], tolerance=1e-4, weight_bytes=[1, 1])
    with pytest.raises(MeasurementError, match="outputs differ from the single-process model"):
        measure_serving(artifact, plan, example, threads=1, timeout_s=120,
                        protocol=TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=1))


@pytest.mark.parametrize(
    ("kind", "bits", "strategy", "degree", "fragment"),
    [
        ("cnn", 32, "tensor_parallel", 2, "defines tensor_parallel_plan"),
        ("transformer", 8, "tensor_parallel", 2, "quantized layers cannot be sharded"),
        ("transformer", 32, "tensor_parallel", 3, "heads do not split evenly over 3 ranks"),
        ("cnn", 8, "pipeline_parallel", 2, "int8 graphs pass quantized tensors"),
    ],
)
def test_strategies_that_cannot_run_are_rejected_with_the_reason(
    kind: str, bits: int, strategy: str, degree: int, fragment: str, tmp_path: Path
) -> None:
    example = torch.randn(BATCH, *SHAPE)
    model = quantize(_model(kind), bits, None, example).serving
    with pytest.raises(InvalidCandidate, match=fragment):
        plan_ranks(model, example, strategy, degree, save_artifact("torch", model, example, tmp_path / "m.pt"))
