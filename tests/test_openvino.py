"""The openvino serving runtime: IR conversion, NNCF int8, measured, exported and registered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimsearch.evaluators import TimingProtocol, evaluate_accuracy, load_artifact, measure_serving, plan_ranks, save_artifact
from slimsearch.evaluators.runtimes import serving_runtime
from slimsearch.evaluators.runtimes.openvino import OpenVinoModule, openvino_ir
from slimsearch.pipelines import CompressionPipeline, TrainingRecipe, load_task
from slimsearch.spaces import Candidate

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> CompressionPipeline:
    return CompressionPipeline(load_task("digits", 0), tmp_path_factory.mktemp("ov"), TrainingRecipe(teacher_epochs=3),
                               seed=0, calibration_size=128)


def _int8_weights(module: OpenVinoModule) -> int:
    import openvino as ov

    model = ov.Core().read_model(model=module.ir_xml.numpy().tobytes().decode(), weights=ov.Tensor(module.ir_weights.numpy()))
    return sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8)
               for op in model.get_ops())


def test_an_openvino_candidate_is_served_from_its_ir_with_its_accuracy(tmp_path: Path, digits: CompressionPipeline) -> None:
    task = digits.task
    teacher_accuracy = evaluate_accuracy(digits.teacher.model, task.val, task.metric)
    built = digits.build(Candidate(None, 0.0, 32, None, "single", 1, 1, runtime="openvino"))
    assert isinstance(built.serving, OpenVinoModule) and built.quant_path == "openvino-fp32"
    batch = task.serving_batch(32)
    artifact = save_artifact("openvino", built.serving, batch, tmp_path / "m.pt")
    assert artifact.suffix == ".ovz"
    served = load_artifact(artifact, threads=1)
    assert abs(evaluate_accuracy(served, task.val, task.metric) - teacher_accuracy) <= 1 / len(task.val[1])
    assert served.inference_precision == "f32", "an explicit precision, never OpenVINO's bf16 default"
    measured = measure_serving(artifact, plan_ranks(built.serving, batch, "single", 1, artifact), batch, threads=1,
                               timeout_s=120, protocol=TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=1))
    assert measured.latency.p50_ms > 0 and measured.memory_bytes > 0, "serving an IR takes memory"


def test_nncf_int8_stores_int8_weights_and_is_cached(tmp_path: Path, digits: CompressionPipeline) -> None:
    candidate = Candidate(None, 0.0, 8, None, "single", 1, 1, runtime="openvino")
    first = digits.build(candidate)
    assert first.quant_path == "openvino-nncf-int8" and not first.cache_hits["openvino"]
    assert _int8_weights(first.serving) > 0
    fp32 = digits.build(Candidate(None, 0.0, 32, None, "single", 1, 1, runtime="openvino"))
    assert first.model_bytes < 0.5 * fp32.model_bytes
    again = digits.build(candidate)
    assert again.cache_hits["openvino"]
    rows = digits.task.val[0][:16]
    assert torch.equal(first.serving(rows), again.serving(rows))


class NotConvertible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # stands for an op the converter cannot take
            raise RuntimeError("unsupported operation in this model")
        return self.head(x.flatten(1))



def test_nncf_draws_no_progress_bars_over_the_search_display(capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    serving_runtime("openvino").convert(model, 8, torch.randn(64, 16))
    assert capsys.readouterr().out == ""

def test_an_unconvertible_model_is_rejected_with_the_converters_reason(digits: CompressionPipeline) -> None:
    from slimsearch.spaces import InvalidCandidate

    with pytest.raises(InvalidCandidate, match="cannot convert this model to OpenVINO: .*unsupported operation"):
        openvino_ir(NotConvertible(), 32, digits.task.val[0][:2])


@pytest.mark.e2e
def test_an_openvino_trial_is_searched_selected_exported_as_ir_and_registered(tmp_path: Path, fast_config: dict) -> None:
    import mlflow
    import numpy as np
    import yaml

    from slimsearch.search.cli import app
    from tests.conftest import write_config
    from tests.helpers import run_cli, runner, stores

    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32, 8]},
                            "student": {"distill": False},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["openvino"]}}
    fast_config["search"].update(n_trials=2, study_name="ov")
    run_cli(write_config(tmp_path / "ov.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    study, _, children, _ = stores(out, "ov")
    assert {t.user_attrs["tags"]["quant_path"] for t in study.trials} == {"openvino-fp32", "openvino-nncf-int8"}
    assert {r.data.tags["inference_precision"] for r in children} == {"f32"}

    result = runner.invoke(app, ["select", "ov", "--storage", f"sqlite:///{out / 'optuna.db'}",
                                 "--max-accuracy-drop", "0.5", "--output", str(tmp_path / "deploy")])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "deploy" / "deployment.yaml").read_text())
    ir = tmp_path / "deploy" / spec["artifacts"]["openvino"]
    assert (ir / "model.xml").exists() and (ir / "model.bin").exists()
    rows = torch.randn(6, 20)
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/slimsearch-ov@champion").predict(rows.numpy())
    assert np.allclose(served, load_artifact(ir)(rows).numpy(), atol=1e-5)
