"""Hugging Face transformers as users bring them: token ids, head pruning, parallel plans.

A tiny randomly initialised BERT (``tests/tasks/tiny_bert.py``) has the module structure
of the pretrained MiniLM task at a hundredth of its size, so every check runs in seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from slimsearch.evaluators import TimingProtocol, measure_serving, plan_ranks, save_artifact
from slimsearch.pipelines import CompressionPipeline, TrainingRecipe
from slimsearch.evaluators.families import transformer_layers
from slimsearch.pipelines.pruning import PruningChoice, prune_channels, pruning_problem
from slimsearch.pipelines.stages import count_macs_and_params
from slimsearch.spaces import Candidate
from tests.tasks.tiny_bert import TinyBert, make_task

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def task():
    return make_task(0)


@pytest.fixture()
def bert() -> nn.Module:
    torch.manual_seed(0)
    return TinyBert().eval()


def test_attention_is_pruned_by_whole_heads_and_the_residual_width_is_kept(task, bert: nn.Module) -> None:
    macs, params = count_macs_and_params(bert, task.train[0][:1])
    pruned = prune_channels(copy.deepcopy(bert), PruningChoice(0.5), task)
    heads = [(layer.attention.num_attention_heads, layer.projections[0].out_features, layer.part(layer.layout.output).in_features)
             for layer in transformer_layers(pruned)]
    assert heads == [(2, 16, 16), (2, 16, 16)], "4 heads of 8 dims -> 2 whole heads per layer, output columns with them"
    layer = pruned.encoder.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 32, "the feed-forward width is pruned too"
    assert pruned.encoder.embeddings.word_embeddings.embedding_dim == 32, "the residual width is untouched"
    with torch.no_grad():
        assert pruned(task.val[0][:5]).shape == (5, 2)
    assert count_macs_and_params(pruned, task.train[0][:1])[0] < 0.7 * macs
    assert count_macs_and_params(pruned, task.train[0][:1])[1] < params


def test_a_cached_pruned_bert_reloads_with_its_head_counts(tmp_path: Path, task) -> None:
    pipeline = CompressionPipeline(task, tmp_path, TrainingRecipe(teacher_epochs=1, finetune_epochs=1), seed=0)
    candidate = Candidate(None, 0.5, 32, None, "single", 1, 1)
    first = pipeline.build(candidate)
    again = CompressionPipeline(task, tmp_path, TrainingRecipe(teacher_epochs=1, finetune_epochs=1), seed=0).build(candidate)
    assert again.cache_hits["prune_finetune"] and not first.cache_hits["prune_finetune"]
    assert [layer.attention.num_attention_heads for layer in transformer_layers(again.serving)] == [2, 2]
    rows = task.val[0][:6]
    with torch.no_grad():
        assert torch.allclose(first.serving(rows), again.serving(rows), atol=1e-5)


class OpaqueAttention(nn.Module):
    """Self-attention with no head count a pruner could read: cutting q/k/v breaks its view."""

    def __init__(self, dim: int = 32, head: int = 8):
        super().__init__()
        self.embed = nn.Embedding(120, dim)
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.head_dim = head
        self.out = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        split = lambda t: t.view(t.shape[0], t.shape[1], 4, self.head_dim).transpose(1, 2)  # noqa: E731
        attended = torch.softmax(split(self.q(x)) @ split(self.k(x)).transpose(-1, -2), dim=-1) @ split(self.v(x))
        return self.out(attended.mean(dim=(1, 2)))


def test_an_architecture_that_pruning_would_break_is_named_before_training(task) -> None:
    reason = pruning_problem(OpaqueAttention(), PruningChoice(0.3), task)
    assert reason and "breaks its forward" in reason and "OpaqueAttention" in reason and "BERT-style" in reason
    assert pruning_problem(TinyBert(), PruningChoice(0.3), task) is None


def test_the_pipeline_rejects_unbuildable_candidates_without_training(tmp_path: Path, task, monkeypatch) -> None:
    pipeline = CompressionPipeline(task, tmp_path, TrainingRecipe(teacher_epochs=1), seed=0)
    trained: list[int] = []
    monkeypatch.setattr("slimsearch.pipelines.stages.train_model", lambda *a, **k: trained.append(1))
    reason = pipeline.rejection(Candidate(None, 0.0, 32, None, "pipeline_parallel", 2, 1))
    assert reason and "torch.fx" in reason and "tensor_parallel" in reason
    assert pipeline.rejection(Candidate(None, 0.0, 32, None, "tensor_parallel", 2, 1)) is None
    assert pipeline.rejection(Candidate(None, 0.5, 32, None, "single", 1, 1)) is None
    assert not trained, "rejections are decided on the architecture, before any training"


def test_tensor_parallel_serves_bert_layers_sharded_without_a_user_plan(tmp_path: Path, task, bert: nn.Module) -> None:
    batch = task.serving_batch(8)
    artifact = save_artifact("torch", bert, batch, tmp_path / "m.pt")
    plan = plan_ranks(bert, batch, "tensor_parallel", 2, artifact)
    measured = measure_serving(artifact, plan, batch, threads=1, timeout_s=120,
                               protocol=TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=1))
    assert measured.output_error < 1e-4, "sharded outputs match the single-process model"
    assert len(measured.per_rank_weight_bytes) == 2


def test_a_teacher_initialised_student_copies_the_chosen_layers_and_cuts_heads(task, bert: nn.Module) -> None:
    from slimsearch.pipelines.students import student_from_teacher

    teacher = TinyBert(layers=4).eval()
    student = student_from_teacher(teacher, width=0.5, depth=2, task=task).eval()
    kept = student.encoder.encoder.layer
    assert len(kept) == 2 and student.encoder.config.num_hidden_layers == 2
    for layer, source in zip(kept, (0, 2)):  # evenly spaced: layers 0 and 2 of 4
        teacher_layer = teacher.encoder.encoder.layer[source]
        assert torch.equal(layer.output.LayerNorm.weight, teacher_layer.output.LayerNorm.weight)
        assert layer.attention.self.num_attention_heads == 2 and layer.intermediate.dense.out_features == 32
    assert torch.equal(student.encoder.embeddings.word_embeddings.weight, teacher.encoder.embeddings.word_embeddings.weight)
    with torch.no_grad():
        assert student(task.val[0][:3]).shape == (3, 2)


def test_teacher_initialisation_is_refused_before_training_where_it_cannot_apply(tmp_path: Path, task) -> None:
    from slimsearch.pipelines import load_task
    from slimsearch.spaces import StudentChoice

    pipeline = CompressionPipeline(task, tmp_path, TrainingRecipe(teacher_epochs=1), seed=0)
    deep = Candidate(StudentChoice(0.5, 3, 2.0, 0.5, init="teacher"), 0.0, 32, None, "single", 1, 1)
    assert "more than the teacher's 2 layers" in pipeline.rejection(deep)
    digits = CompressionPipeline(load_task("digits-transformer", 0), tmp_path, TrainingRecipe(teacher_epochs=1), seed=0)
    custom = Candidate(StudentChoice(0.5, 1, 2.0, 0.5, init="teacher"), 0.0, 32, None, "single", 1, 1)
    assert "laid out like a known family" in digits.rejection(custom)


@pytest.mark.e2e
def test_a_search_on_a_bert_classifier_runs_every_technique_without_an_error(tmp_path: Path, fast_config: dict) -> None:
    """Token ids through head pruning, teacher-cut and scratch students, int8 on both runtimes."""
    from optuna.trial import TrialState

    from tests.conftest import write_config
    from tests.helpers import run_cli, stores

    fast_config.update(task="tests.tasks.tiny_bert:make_task")
    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.5, "step": 0.5}, "quantize": {"bits": [32, 8]},
                            "student": {"width": [0.5], "depth": [1], "temperature": [2.0], "alpha": [0.5],
                                        "init": ["teacher", "scratch"]},
                            "parallel": {"strategies": ["single", "tensor_parallel", "pipeline_parallel"],
                                         "degree": [2], "threads": [1], "runtimes": ["torch", "onnxruntime"]}}
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    fast_config["search"].update(n_trials=8, study_name="bert", sampler="random", seed=3)
    run_cli(write_config(tmp_path / "bert.yaml", **fast_config))
    study, _, _, _ = stores(Path(fast_config["output_dir"]), "bert")
    errors = [t.user_attrs["failure_reason"] for t in study.trials if t.user_attrs.get("failure_kind") == "error"]
    assert not errors
    rejected = {t.user_attrs["failure_reason"] for t in study.trials if t.user_attrs.get("failure_kind") == "rejected"}
    assert all("torch.fx" in r or "tensor_parallel" in r or "onnxruntime" in r or "cores" in r for r in rejected), rejected
    summaries = [t.user_attrs["summary"] for t in study.trials
                 if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(summaries) == 8 and any("prune 0.5" in s for s in summaries)


@pytest.mark.e2e
def test_a_model_with_two_named_inputs_is_searched_deployed_and_served_by_name(tmp_path: Path,
                                                                                fast_config: dict) -> None:
    import mlflow
    import numpy as np
    import yaml

    from slimsearch.search.cli import app
    from tests.conftest import write_config
    from tests.helpers import run_cli, runner, stores
    from tests.tasks.tiny_bert import make_two_input_task

    fast_config.update(task="tests.tasks.tiny_bert:make_two_input_task")
    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.5, "step": 0.5}, "quantize": {"bits": [32, 8]},
                            "student": {"distill": False},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["torch", "onnxruntime"]}}
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    fast_config["search"].update(n_trials=4, study_name="two-inputs", sampler="random")
    run_cli(write_config(tmp_path / "two.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "two-inputs")
    assert not [t.user_attrs["failure_reason"] for t in study.trials if t.user_attrs.get("failure_kind") == "error"]

    result = runner.invoke(app, ["select", "two-inputs", "--storage", f"sqlite:///{out / 'optuna.db'}",
                                 "--max-accuracy-drop", "0.5", "--output", str(tmp_path / "deploy")])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "deploy" / "deployment.yaml").read_text())
    assert spec["serving"]["input_names"] == ["input_ids", "attention_mask"]
    assert spec["serving"]["input_shape"] == [2, 8] and spec["serving"]["input_dtype"] == "int64"
    rows = {name: tensor[:5].numpy() for name, tensor in make_two_input_task(0).test[0].items()}
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/slimsearch-two-inputs@champion").predict(rows)
    assert np.asarray(served).shape == (5, 2)


@pytest.mark.e2e
def test_a_hugging_face_classifier_used_as_it_comes_is_searched_and_deployed(tmp_path: Path, fast_config: dict) -> None:
    """ModelOutput instead of a tensor, two named inputs, no student_architecture."""
    from slimsearch.search.cli import app
    from tests.conftest import write_config
    from tests.helpers import cli_text, run_cli, runner, stores

    fast_config.update(task="tests.tasks.tiny_bert:make_hf_classifier_task")
    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.5, "step": 0.5}, "quantize": {"bits": [32, 8]},
                            "student": {"width": [0.5], "depth": [1], "temperature": [2.0], "alpha": [0.5],
                                        "init": ["teacher", "scratch"]},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["torch", "onnxruntime"]}}
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    # four anchors here (teacher fp32 and int8, the cut student int8, the largest student fp32), then random
    fast_config["search"].update(n_trials=7, study_name="hf", sampler="random", seed=2)
    config = write_config(tmp_path / "hf.yaml", **fast_config)
    refused = runner.invoke(app, ["validate", str(config)])
    assert refused.exit_code == 2 and "space.student.init: [teacher]" in cli_text(refused.output), refused.output

    fast_config["space"]["student"]["init"] = ["teacher"]
    config = write_config(tmp_path / "hf.yaml", **fast_config)
    run_cli(config)
    study, _, _, _ = stores(Path(fast_config["output_dir"]), "hf")
    assert not [t.user_attrs["failure_reason"] for t in study.trials if t.state.name == "FAIL"]
    assert any("onnxruntime" in t.user_attrs["summary"] for t in study.trials if t.state.name == "COMPLETE")
    chosen = runner.invoke(app, ["select", str(config), "--max-accuracy-drop", "0.5", "--format", "onnx"])
    assert chosen.exit_code == 0 and "registered: models:/" in cli_text(chosen.output), chosen.output
