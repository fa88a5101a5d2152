"""Every common model family through every compression technique (``tests/tasks/families.py``).

Tiny random-init Hugging Face configs (BERT, RoBERTa, DistilBERT, GPT-2, LLaMA with shared
key/value heads, ViT), a torchvision-style residual CNN and an LSTM: each is loaded as a
user's task, its teacher trained for one epoch, then pruned, quantized on each runtime and,
for transformers, cut into a student -- as a search would build them.
"""

from __future__ import annotations

import dataclasses
import threading
from io import StringIO
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from slimsearch.evaluators.families import transformer_layers
from slimsearch.pipelines import CompressionPipeline, TrainingRecipe, load_task
from slimsearch.spaces import Candidate, StudentChoice

pytest.importorskip("transformers")

TRANSFORMERS = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert", "gpt2": "gpt2", "llama": "llama",
                "vit": "vit_task"}
FAMILIES = {**TRANSFORMERS, "resnet": "resnet_task", "lstm": "lstm_task"}
RECIPE = TrainingRecipe(teacher_epochs=1, distill_epochs=1, finetune_epochs=1)
EXPORTED = ("gpt2", "llama", "vit", "lstm")
"""Families whose ONNX and OpenVINO int8 are exercised here (the rest in benchmarks/families.py):
fused Conv1D-turned-Linear, shared key/value heads, conv patches + attention, recurrence."""


def _candidate(prune: float = 0.0, bits: int = 32, runtime: str = "torch", student: StudentChoice | None = None) -> Candidate:
    return Candidate(student, prune, bits, None, "single", 1, 1, runtime=runtime)


def _linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_pruned_quantized_on_every_runtime_and_counted(tmp_path: Path, family: str) -> None:
    task = load_task(f"tests.tasks.families:{FAMILIES[family]}", 0)
    pipeline = CompressionPipeline(task, tmp_path, RECIPE, seed=0)
    teacher = pipeline.build(_candidate())
    assert teacher.macs > _linear_weights(pipeline.teacher.model), "every Linear (GPT-2's Conv1D too) is counted"

    pruned = pipeline.build(_candidate(prune=0.5))
    assert pruned.params < teacher.params  # an LSTM keeps its recurrent layer whole: only its head shrinks
    for layer in transformer_layers(pruned.serving):
        assert layer.key_value_heads * 2 == transformer_layers(pipeline.teacher.model)[0].key_value_heads
        assert layer.part(layer.layout.output).out_features == layer.part(layer.layout.output).weight.shape[0]
    assert bool(transformer_layers(pruned.serving)) == (family in TRANSFORMERS)

    int8 = pipeline.build(_candidate(bits=8))
    assert int8.quant_path != "fp32" and int8.model_bytes < 0.7 * teacher.model_bytes, int8.quant_path  # float embeddings stay
    rows = task.val[0]
    others = ([pipeline.build(_candidate(prune=0.5, bits=8, runtime="onnxruntime")),
               pipeline.build(_candidate(bits=8, runtime="openvino"))] if family in EXPORTED else [])
    for built in (pruned, int8, *others):
        with torch.no_grad():
            logits = built.serving(rows)
        assert logits.shape == (len(rows), task.num_classes) and torch.isfinite(logits).all(), built.quant_path


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_a_student_is_cut_from_every_transformer_family_with_whole_heads_and_fewer_layers(tmp_path: Path,
                                                                                         family: str) -> None:
    task = load_task(f"tests.tasks.families:{FAMILIES[family]}", 0)
    pipeline = CompressionPipeline(task, tmp_path, RECIPE, seed=0)
    student = pipeline.build(_candidate(student=StudentChoice(0.5, 1, 2.0, 0.5, init="teacher")))
    teacher_layers, student_layers = transformer_layers(pipeline.teacher.model), transformer_layers(student.serving)
    assert len(student_layers) == 1 and len(teacher_layers) == 2
    assert student_layers[0].heads * 2 == teacher_layers[0].heads
    assert student_layers[0].head_dim == teacher_layers[0].head_dim, "heads are removed whole"
    with torch.no_grad():
        assert torch.isfinite(student.serving(task.val[0][:4])).all()


class KeywordSpy(nn.Module):
    """Records how the wrapped GPT-2 classifier is called: by keyword, never by position."""

    calls: list[tuple[int, tuple[str, ...]]] = []

    def __init__(self) -> None:
        super().__init__()
        from tests.tasks.families import _hf_text_model

        self.model = _hf_text_model("gpt2")

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        KeywordSpy.calls.append((len(args), tuple(sorted(kwargs))))
        return self.model(*args, **kwargs).logits


def test_two_named_inputs_reach_a_gpt2_classifier_as_keywords_in_every_stage(tmp_path: Path, monkeypatch) -> None:
    from tests.tasks import families

    base = families.text_task("gpt2")
    monkeypatch.setattr(families, "spy_task", lambda seed: dataclasses.replace(base, teacher_architecture=KeywordSpy),
                        raising=False)
    KeywordSpy.calls.clear()
    task = load_task("tests.tasks.families:spy_task", 0)
    pipeline = CompressionPipeline(task, tmp_path, RECIPE, seed=0)  # teacher check, trace, training
    for candidate in (_candidate(prune=0.5), _candidate(bits=8), _candidate(bits=8, runtime="onnxruntime"),
                      _candidate(runtime="openvino")):
        pipeline.build(candidate)
    assert KeywordSpy.calls and set(KeywordSpy.calls) == {(0, ("attention_mask", "input_ids"))}
    ids, mask = task.val[0][:4].unbind(1)
    hidden_first = mask.clone()
    hidden_first[:, 0] = 0
    with torch.no_grad():  # the mask reaches GPT-2's attention_mask (not its key/value cache) and is used
        as_given = pipeline.teacher.model(torch.stack([ids, mask], dim=1))
        first_token_masked = pipeline.teacher.model(torch.stack([ids, hidden_first], dim=1))
    assert not torch.allclose(as_given, first_token_masked)


def test_teacher_training_reports_every_epoch_and_stops_within_a_batch(tmp_path: Path) -> None:
    from slimsearch.search.loop.teacher_progress import TeacherProgress, TeacherTrainingStopped

    task = load_task("tests.tasks.families:lstm_task", 0)
    output = StringIO()
    console = Console(file=output, width=200)
    CompressionPipeline(task, tmp_path / "a", TrainingRecipe(teacher_epochs=2), seed=0,
                        teacher_progress=TeacherProgress(task, console, threading.Event()))
    lines = [line for line in output.getvalue().splitlines() if line.startswith("teacher epoch")]
    assert [line.split(":")[0] for line in lines] == ["teacher epoch 1/2", "teacher epoch 2/2"]
    assert all("loss" in line and "validation accuracy" in line and "min left" in line for line in lines)

    stop = threading.Event()
    progress = TeacherProgress(task, console, stop)
    heard = progress.on_batch

    def stop_after_two(loss: float) -> None:
        if progress.batches == 2:
            stop.set()  # what a first Ctrl-C does
        heard(loss)

    progress.on_batch = stop_after_two  # type: ignore[method-assign]
    with pytest.raises(TeacherTrainingStopped, match="after 3 batches"):
        CompressionPipeline(task, tmp_path / "b", TrainingRecipe(teacher_epochs=50), seed=0, teacher_progress=progress)
    assert not list((tmp_path / "b").rglob("*.pt")), "a stopped teacher is not cached"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tensor_parallel_serves_fused_and_shared_key_value_attention_sharded_by_heads(tmp_path: Path,
                                                                                     family: str) -> None:
    """GPT-2's fused query/key/value layer is regrouped per rank; LLaMA shares keys/values across heads."""
    from slimsearch.evaluators import TimingProtocol, measure_serving, plan_ranks, save_artifact
    from slimsearch.evaluators.memory import state_dict_bytes

    task = load_task(f"tests.tasks.families:{family}", 0)
    model = CompressionPipeline(task, tmp_path, RECIPE, seed=0).teacher.model
    batch = task.serving_batch(8)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    artifact = save_artifact("torch", model, batch, tmp_path / "m.pt")
    plan = plan_ranks(model, batch, "tensor_parallel", 2, artifact)
    measured = measure_serving(artifact, plan, batch, threads=1, timeout_s=120,
                               protocol=TimingProtocol(warmup_s=0.01, round_s=0.02, rounds=1, max_rounds=1))
    assert measured.output_error < 1e-4, "sharded outputs match the single-process model"
    assert all(weights < 0.8 * state_dict_bytes(model) for weights in measured.per_rank_weight_bytes)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items()), \
        "the candidate itself is not reordered"


@pytest.mark.e2e
def test_a_gpt2_classifier_is_searched_selected_and_served_by_its_registered_pyfunc(tmp_path: Path,
                                                                                    fast_config: dict) -> None:
    import mlflow
    import numpy as np

    from slimsearch.search.cli import app
    from tests.conftest import write_config
    from tests.helpers import cli_text, run_cli, runner, stores
    from tests.tasks.families import text_task

    fast_config.update(task="tests.tasks.families:gpt2")
    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.5, "step": 0.5}, "quantize": {"bits": [32, 8]},
                            "student": {"width": [0.5], "depth": [1], "temperature": [2.0], "alpha": [0.5],
                                        "init": ["teacher"]},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["torch", "onnxruntime"]}}
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    fast_config["search"].update(n_trials=3, study_name="gpt2", sampler="random", seed=5)
    del fast_config["training"]  # the task's training_defaults
    config = write_config(tmp_path / "gpt2.yaml", **fast_config)
    run_cli(config)
    study, _, _, _ = stores(Path(fast_config["output_dir"]), "gpt2")
    assert not [t.user_attrs["failure_reason"] for t in study.trials if t.user_attrs.get("failure_kind") == "error"]
    assert [t for t in study.trials[:2] if t.state.name == "COMPLETE"] == study.trials[:2], "both teacher anchors"

    chosen = runner.invoke(app, ["select", str(config), "--max-drop", "0.5"])
    assert chosen.exit_code == 0 and "registered: models:/" in cli_text(chosen.output), chosen.output
    rows = {name: tensor[:5].numpy() for name, tensor in text_task("gpt2").test[0].items()}
    mlflow.set_tracking_uri(f"sqlite:///{Path(fast_config['output_dir']) / 'mlflow.db'}")
    served = np.asarray(mlflow.pyfunc.load_model("models:/slimsearch-gpt2@champion").predict(rows))
    assert served.shape == (5, 2) and np.isfinite(served).all()


class TwoInputBag(nn.Module):
    """A vocabulary table large enough to be stored int8, looked up with ids that arrive packed."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(2048, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * weights).sum(1) / weights.sum(1).clamp(min=1))


def test_unpacked_inputs_are_contiguous_for_int8_vocabulary_lookups() -> None:
    from slimsearch.pipelines.inputs import PackedInputs
    from slimsearch.pipelines.quantize import quantize

    ids = torch.randint(1, 2048, (6, 5))
    packed = torch.stack([ids, torch.ones_like(ids)], dim=1)
    int8 = quantize(PackedInputs(TwoInputBag(), ("input_ids", "attention_mask")), 8, None, packed)
    assert int8.path == "dynamic-int8-emb8"
    with torch.no_grad():
        assert int8.serving(packed).shape == (6, 2)
