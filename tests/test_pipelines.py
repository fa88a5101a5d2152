"""Each stage on a tiny model, with assertions that fail if the stage silently does nothing."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from torch import nn
from typer.testing import CliRunner

from slimsearch.evaluators import evaluate_accuracy
from slimsearch.pipelines import CompressionPipeline, TaskLoadError, TrainingRecipe, load_task
from slimsearch.pipelines.cache import StageCache
from slimsearch.search.cli import app
from slimsearch.pipelines.digits import DigitsCNN, load_splits
from slimsearch.pipelines.digits_transformer import DigitsTransformer
from slimsearch.pipelines.task import Task
from slimsearch.evaluators.memory import state_dict_bytes
from slimsearch.pipelines.export import ExportError, export_model
from slimsearch.evaluators.runtimes import serving_runtime
from slimsearch.pipelines.outputs import with_logits_outputs
from slimsearch.pipelines.quantize import quantize
from slimsearch.pipelines.features import FeatureHints, HintLoss, teacher_stage_outputs
from slimsearch.pipelines.pruning import CHANNEL_MULTIPLE, PruningChoice, aligned_cut, prune_channels, prune_to_shapes, pruning_problem
from slimsearch.pipelines.stages import (
    StageResult,
    count_macs_and_params,
    pruned_and_finetuned,
    qat_trainer,
    teacher_features,
)
from slimsearch.pipelines.training import Distillation, train_model
from slimsearch.spaces import Candidate, InvalidCandidate, StudentChoice, StudentSpec
from tests.conftest import write_config
from tests.helpers import cli_text
from tests.tasks.token_bag import TokenBag


@pytest.fixture(scope="module")
def digits_task():
    return load_task("digits", 0)


@pytest.fixture(scope="module")
def small_cnn(digits_task) -> nn.Module:
    """A quickly trained narrow digits CNN, so quantization error is judged on a real model."""
    return train_model(DigitsCNN(width=0.5, depth=3), digits_task.train, 4, seed=0)


def test_digits_split_is_fixed_by_seed_and_disjoint() -> None:
    (xtr, ytr), (xva, yva), (xte, yte) = load_splits(0)
    assert (len(ytr), len(yva), len(yte)) == (1078, 359, 360)
    assert xtr.shape[1:] == (1, 16, 16)
    again = load_splits(0)
    assert torch.equal(again[2][0], xte)
    assert not torch.equal(load_splits(1)[2][0], xte)


def test_digits_teacher_reaches_98_percent_and_is_cached(digits_teacher_cache: Path, digits_task) -> None:
    """The fixture trained the teacher into an empty cache (it asserts the miss); here it loads."""
    again = CompressionPipeline(digits_task, digits_teacher_cache, TrainingRecipe(), seed=0)
    assert again.teacher.cache_hit
    assert evaluate_accuracy(again.teacher.model, digits_task.test, digits_task.metric) >= 0.98


def test_pruning_physically_removes_channels(digits_task, small_cnn) -> None:
    example = digits_task.train[0][:1]
    macs_before, params_before = count_macs_and_params(small_cnn, example)
    pruned = prune_channels(copy.deepcopy(small_cnn), PruningChoice(0.5), digits_task)
    macs_after, params_after = count_macs_and_params(pruned, example)
    assert params_after < 0.5 * params_before and macs_after < 0.5 * macs_before
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels < 16
    assert pruned.head.out_features == 10
    assert pruned(example).shape == (1, 10)


def _channels(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_pruned_channel_counts_stay_multiples_of_eight_for_blocked_kernels(digits_task, scope: str) -> None:
    """Unaligned, the teacher at 0.2 keeps (26, 51, 102) channels, which onnxruntime served
    slower than the unpruned teacher; aligned it keeps the nearest multiples of 8."""
    torch.manual_seed(0)
    teacher = DigitsCNN().eval()
    pruned = prune_channels(copy.deepcopy(teacher), PruningChoice(0.2, "l1", scope), digits_task)
    assert all(c % CHANNEL_MULTIPLE == 0 for c in _channels(pruned)), _channels(pruned)
    assert sum(_channels(pruned)) < sum(_channels(teacher))
    if scope == "uniform":
        assert _channels(pruned) == [24, 48, 104]


def test_a_candidate_is_priced_by_its_pruned_structure_before_any_training(digits_teacher_cache: Path,
                                                                          digits_task) -> None:
    """What the cost predictor prices a new model by: the MACs and parameters of its
    architecture pruned as asked on an untrained copy, the same shapes a build keeps."""
    pipeline = CompressionPipeline(digits_task, digits_teacher_cache, TrainingRecipe(), seed=0)
    example = digits_task.train[0][:1]
    teacher = Candidate(None, 0.0, 32, None, "single", 1, 1)
    pruned = dataclasses.replace(teacher, prune_ratio=0.4)
    assert pipeline.structure(teacher) == count_macs_and_params(pipeline.teacher.model, example)
    expected = count_macs_and_params(prune_channels(copy.deepcopy(pipeline.teacher.model), PruningChoice(0.4),
                                                    digits_task), example)
    assert pipeline.structure(pruned) == expected and expected[0] < 0.6 * pipeline.structure(teacher)[0]
    student = dataclasses.replace(teacher, student=StudentChoice(0.5, 2, 4.0, 0.5))
    assert pipeline.structure(student) == count_macs_and_params(DigitsCNN(0.5, 2), example)
    assert pipeline.structure(dataclasses.replace(teacher, bits=8, threads=2)) == pipeline.structure(teacher), \
        "the deployment does not change the model"


def test_an_aligned_cut_rounds_the_kept_count_to_the_nearest_multiple_and_spares_narrow_layers() -> None:
    assert aligned_cut(6, 32, 8) == 8, "26 kept -> 24"
    assert aligned_cut(26, 128, 8) == 24, "102 kept -> 104"
    assert aligned_cut(2, 8, 8) == 2, "a layer no wider than the multiple is cut as asked"
    assert aligned_cut(12, 16, 8) == 8, "never fewer than the multiple"
    assert aligned_cut(1, 13, 8) == 0, "rounding up past the layer's width cuts nothing"


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "random"])
def test_every_importance_prunes_and_chooses_its_own_channels(digits_task, small_cnn, importance: str) -> None:
    pruned = prune_channels(copy.deepcopy(small_cnn), PruningChoice(0.5, importance), digits_task)
    l1 = prune_channels(copy.deepcopy(small_cnn), PruningChoice(0.5, "l1"), digits_task)
    assert _channels(pruned) == _channels(l1), "uniform scope: the same shapes whatever the importance"
    convs = [(a, b) for a, b in zip(pruned.modules(), l1.modules()) if isinstance(a, nn.Conv2d)]
    same_channels = all(torch.equal(a.weight, b.weight) for a, b in convs)
    assert (importance == "l1") == same_channels, "the importance picks which channels stay"


def test_global_scope_prunes_layers_unevenly_to_a_similar_total(digits_task) -> None:
    """A fixed (seeded, untrained) CNN, so the ranking is the same on every run. Uniform
    keeps each layer's aligned share (within one multiple of 8); global departs from it."""
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    uniform = prune_channels(copy.deepcopy(model), PruningChoice(0.4, "l1", "uniform"), digits_task)
    global_ = prune_channels(copy.deepcopy(model), PruningChoice(0.4, "l1", "global"), digits_task)
    before = _channels(model)
    assert all(abs(kept - 0.6 * width) <= CHANNEL_MULTIPLE / 2 for kept, width in zip(_channels(uniform), before))
    assert any(abs(kept - 0.6 * width) > CHANNEL_MULTIPLE / 2 for kept, width in zip(_channels(global_), before))
    assert sum(_channels(global_)) == pytest.approx(sum(_channels(uniform)), rel=0.1)


def test_iterative_pruning_fine_tunes_between_steps_and_reloads_from_cache(tmp_path: Path, digits_task,
                                                                         small_cnn) -> None:
    recipe = TrainingRecipe(finetune_epochs=1)
    base = StageResult(small_cnn, "base-unit", True)
    pruning = PruningChoice(0.5, "taylor", "global", steps=2)
    epochs: list[tuple[int, int]] = []
    first = pruned_and_finetuned(digits_task, StageCache(tmp_path), recipe, 0, base, pruning, None,
                                 lambda e, total, _: epochs.append((e, total)))
    assert epochs == [(1, 2), (2, 2)], "one fine-tune epoch after each of the 2 pruning steps"
    again = pruned_and_finetuned(digits_task, StageCache(tmp_path), recipe, 0, base, pruning, None)
    assert again.cache_hit and _channels(again.model) == _channels(first.model)
    x = digits_task.val[0][:32]
    assert torch.allclose(again.model(x), first.model(x))
    assert evaluate_accuracy(again.model, digits_task.val, digits_task.metric) > 0.8


def test_quantization_aware_fine_tuning_trains_through_fake_quant_then_runs_int8(tmp_path: Path, digits_task,
                                                                             small_cnn) -> None:
    calibration = digits_task.train[0][:128]
    epochs: list[int] = []
    train, hits = qat_trainer(digits_task, StageCache(tmp_path), TrainingRecipe(finetune_epochs=2), 0,
                              StageResult(small_cnn, "base-unit", True), None, lambda e, *_: epochs.append(e))
    qat = quantize(small_cnn, 8, None, calibration, train)
    ptq = quantize(small_cnn, 8, None, calibration)
    assert (qat.path, ptq.path, epochs, hits) == ("fx-qat-int8-x86", "fx-static-int8-x86", [1, 2], [False])
    assert any("quantized" in type(m).__module__ for m in qat.serving.modules())
    x = digits_task.val[0][:64]
    assert not torch.equal(qat.serving(x), ptq.serving(x)), "fine-tuning changed the int8 weights"
    assert evaluate_accuracy(qat.serving, digits_task.val, digits_task.metric) >= 0.9
    again, hits_again = qat_trainer(digits_task, StageCache(tmp_path), TrainingRecipe(finetune_epochs=2), 0,
                                    StageResult(small_cnn, "base-unit", True), None)
    assert torch.equal(quantize(small_cnn, 8, None, calibration, again).serving(x), qat.serving(x))
    assert hits_again == [True]
    linear_only = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with pytest.raises(InvalidCandidate, match="space.quantize.qat"):
        quantize(linear_only, 8, None, calibration, train)


@pytest.mark.parametrize("family", ["cnn", "transformer"])
def test_onnxruntime_runtime_runs_float_and_its_own_int8(digits_task, small_cnn, family: str) -> None:
    model = small_cnn if family == "cnn" else train_model(DigitsTransformer(), digits_task.train, 3, seed=0)
    calibration, x = digits_task.train[0][:128], digits_task.val[0][:64]
    onnxruntime = serving_runtime("onnxruntime")
    fp32, int8 = (onnxruntime.from_buffers(onnxruntime.convert(model, bits, calibration)) for bits in (32, 8))
    assert onnxruntime.quant_path(model, 32) == "ort-fp32"
    assert onnxruntime.quant_path(model, 8) == ("ort-static-int8-qdq" if family == "cnn" else "ort-dynamic-int8")
    assert torch.allclose(fp32(x), model(x), atol=1e-4), "fp32 onnxruntime computes the torch model"
    assert state_dict_bytes(int8) < state_dict_bytes(fp32) / 2, "int8 weights are stored as int8"
    agree = (int8(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree >= 0.9 and not torch.equal(int8(x), fp32(x))
    with pytest.raises(InvalidCandidate, match="32 or 8 bits"):
        onnxruntime.convert(model, 16, calibration)
    with pytest.raises(ExportError, match="--format onnx"):
        export_model(int8, "onnxruntime", x[:4], "torchscript", Path("unused"))


def test_int8_runs_quantized_kernels_and_is_smaller(digits_task, small_cnn) -> None:
    result = quantize(small_cnn, 8, None, digits_task.train[0][:128])
    module_types = {type(m).__module__ for m in result.serving.modules()}
    assert any("quantized" in t for t in module_types)
    assert not any(isinstance(m, nn.Conv2d) and m.weight.dtype == torch.float32 for m in result.serving.modules()
                   if type(m) is nn.Conv2d)
    assert result.model_bytes < state_dict_bytes(small_cnn) / 2.5
    assert not result.simulated and result.path == "fx-static-int8-x86"
    fp32 = evaluate_accuracy(small_cnn, digits_task.val, digits_task.metric)
    int8 = evaluate_accuracy(result.serving, digits_task.val, digits_task.metric)
    assert int8 >= fp32 - 0.03


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_is_a_real_dtype_behind_a_float32_interface(digits_task, small_cnn, dtype: str) -> None:
    result = quantize(small_cnn, 16, dtype, digits_task.train[0][:8])
    assert {p.dtype for p in result.serving.parameters()} == {getattr(torch, dtype)}
    assert result.serving(digits_task.val[0][:4]).dtype == torch.float32
    assert result.model_bytes < state_dict_bytes(small_cnn) * 0.6


def test_sub_8_bit_is_simulated_with_few_weight_levels(digits_task, small_cnn) -> None:
    result = quantize(small_cnn, 4, None, digits_task.train[0][:8])
    assert result.simulated and result.path == "fake-quant-w4"
    conv = next(m for m in result.serving.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert all(len(torch.unique(channel)) <= 16 for channel in conv.weight)
    assert result.model_bytes < state_dict_bytes(small_cnn) / 4
    original = next(m for m in small_cnn.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert len(torch.unique(original.weight[0])) > 16, "quantize must not modify its input model"


def _seeded_cnn() -> DigitsCNN:
    torch.manual_seed(0)
    return DigitsCNN(0.25, 2)


def test_distillation_term_changes_training(digits_task) -> None:
    soft = torch.randn(len(digits_task.train[1]), 10) * 5
    plain = train_model(_seeded_cnn(), digits_task.train, 1, seed=0)
    distilled = train_model(_seeded_cnn(), digits_task.train, 1, seed=0,
                            distillation=Distillation(soft, temperature=2.0, alpha=0.9))
    no_kd = train_model(_seeded_cnn(), digits_task.train, 1, seed=0,
                        distillation=Distillation(soft, temperature=2.0, alpha=0.0))
    assert torch.equal(plain.head.weight, no_kd.head.weight)
    assert not torch.equal(plain.head.weight, distilled.head.weight)


def test_distilled_student_against_the_same_student_from_labels(digits_teacher_cache: Path, digits_task,
                                                                 record_property) -> None:
    """Same student, seed and 10-epoch budget: logit distillation (T=4, alpha=0.5) vs labels
    only. Measured over 3 seeds, KD did not help small digits students at this budget
    (w0.5 d2: 0.966 vs 0.979; w0.25 d2: 0.906 vs 0.942) and only the teacher-sized one
    (0.999 vs 0.997), so the default space keeps alpha = 0 as a choice and lets the search
    decide per student rather than always distilling."""
    soft = CompressionPipeline(digits_task, digits_teacher_cache, TrainingRecipe(), seed=0).soft_targets
    accuracy = {}
    for label, alpha in (("labels", 0.0), ("distilled", 0.5)):
        torch.manual_seed(0)
        student = train_model(digits_task.student_architecture(0.5, 2), digits_task.train, 10, seed=0,
                              distillation=Distillation(soft, temperature=4.0, alpha=alpha))
        accuracy[label] = evaluate_accuracy(student, digits_task.val, digits_task.metric)
        record_property(f"val_accuracy_{label}", accuracy[label])
    print(f"w0.5 d2, 10 epochs: labels only {accuracy['labels']:.4f}, distilled {accuracy['distilled']:.4f}")
    assert min(accuracy.values()) >= 0.95, "both budgets train a usable student"
    assert accuracy["labels"] != accuracy["distilled"], "distillation changes what the student learns"
    assert 0.0 in StudentSpec().alpha and any(a > 0 for a in StudentSpec().alpha), "the search can choose either"


def test_feature_hints_train_the_student_towards_the_teacher_stages(
    digits_teacher_cache: Path, digits_task, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = CompressionPipeline(digits_task, digits_teacher_cache, TrainingRecipe(), seed=0)
    features = teacher_features(digits_task, pipeline.cache, pipeline.teacher)
    assert [tuple(f.shape[1:]) for f in features] == [(32, 16, 16), (64, 8, 8), (128, 4, 4)]
    assert len(features[0]) == len(digits_task.train[1])
    hint_losses: list[float] = []
    measured = HintLoss.forward

    def spy(self: HintLoss, outputs: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        assert len(outputs) == 2, "a depth-2 student matches the teacher's first two stages"
        hint_losses.append(float((loss := measured(self, outputs, rows)).detach()))
        return loss

    monkeypatch.setattr(HintLoss, "forward", spy)
    students = {weight: train_model(digits_task.student_architecture(0.25, 2), digits_task.train, 3, seed=0,
                                    hints=FeatureHints(features, weight)) for weight in (0.0, 1.0)}
    per_epoch = len(hint_losses) // 3
    first, last = hint_losses[:per_epoch], hint_losses[-per_epoch:]
    assert per_epoch > 0 and sum(last) < 0.8 * sum(first), "student stages move towards the teacher's"
    head = [student.head.weight for student in students.values()]
    assert not torch.allclose(*head), "the hint loss changes what the student learns"


def test_feature_distillation_needs_feature_stages_and_shows_in_the_summary(tmp_path: Path, digits_task) -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with pytest.raises(InvalidCandidate, match="no feature_stages"):
        train_model(plain, digits_task.train, 1, seed=0, hints=FeatureHints([torch.zeros(1)], 1.0))
    candidate = Candidate(StudentChoice(0.5, 1, 4.0, 0.5, feature_weight=1.0, epochs=1), 0.0, 32, None, "single", 1, 1)
    transformer = load_task("digits-transformer", 0)
    rows = (transformer.train[0][:128], transformer.train[1][:128])
    token_features = teacher_stage_outputs(transformer.teacher_architecture(), rows[0])
    assert [tuple(f.shape[1:]) for f in token_features] == [(16, 64), (16, 64)]
    student = train_model(transformer.student_architecture(0.5, 1), rows, 1, seed=0,
                          hints=FeatureHints(token_features, 1.0))
    assert student.feature_stages() == ["blocks.0"], "token stages match through a linear projection"
    assert candidate.summary().startswith("student w0.5 d1 e1 hints 1 |")


def test_stage_cache_builds_once_and_loads_weights_only(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    calls = []
    key = cache.key("unit", a=1)
    first, hit1 = cache.get_or_build(key, lambda: calls.append(1) or {"w": torch.ones(3)})
    second, hit2 = cache.get_or_build(key, lambda: calls.append(1) or {"w": torch.zeros(3)})
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert torch.equal(second["w"], torch.ones(3))
    assert cache.key("unit", a=2) != key
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_info_and_clear_by_stage_skip_entries_in_use(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    for stage, value in (("student", torch.ones(256)), ("student", torch.zeros(8)), ("pruned", torch.ones(4))):
        cache.get_or_build(cache.key(stage, size=len(value), first=float(value[0])), lambda v=value: v)
    config = write_config(tmp_path / "c.yaml", output_dir=str(tmp_path))
    info = CliRunner().invoke(app, ["cache", "info", str(config)])
    assert info.exit_code == 0 and "student" in cli_text(info.output) and "pruned" in cli_text(info.output)
    assert [(u.stage, u.entries) for u in cache.usage()] == [("pruned", 1), ("student", 2)]

    typo = CliRunner().invoke(app, ["cache", "clear", str(config), "--stage", "students"])
    assert typo.exit_code == 2 and "present: pruned, student" in cli_text(typo.output)
    in_use = FileLock(str(next((tmp_path / "cache").glob("student-*.pt"))) + ".lock")
    with in_use:  # a running search is loading this entry
        deleted, freed, skipped = cache.clear("student")
    assert (deleted, skipped) == (1, 1) and freed > 0
    assert [(u.stage, u.entries) for u in cache.usage()] == [("pruned", 1), ("student", 1)]
    cleared = CliRunner().invoke(app, ["cache", "clear", str(config)])
    assert cleared.exit_code == 0 and "deleted 2 entries" in cli_text(cleared.output)
    assert cache.usage() == [] and not list((tmp_path / "cache").iterdir())


def test_repeated_student_comes_from_cache(tmp_path: Path, user_task: str) -> None:
    task = load_task(user_task, 0)
    pipeline = CompressionPipeline(task, tmp_path, TrainingRecipe(teacher_epochs=2, distill_epochs=2), seed=0)
    candidate = Candidate(StudentChoice(0.5, 1, 2.0, 0.5), 0.25, 8, None, "single", 1, 1)
    first = pipeline.build(candidate)
    second = pipeline.build(candidate)
    assert first.cache_hits == {"distill": False, "prune_finetune": False}
    assert second.cache_hits == {"distill": True, "prune_finetune": True}
    x = task.val[0][:16]
    assert torch.allclose(first.serving(x), second.serving(x))
    assert first.params == second.params and first.params < sum(p.numel() for p in pipeline.teacher.model.parameters())


def test_readme_task_example_loads(user_task: str) -> None:
    task = load_task(user_task, 3)
    assert task.num_classes == 3 and task.input_shape == (20,)


def test_a_trained_model_alone_with_numpy_features_is_compressed(tmp_path: Path) -> None:
    """No teacher_architecture, float64 inputs, int32 labels: they arrive as float32 and
    int64, the given model is the teacher, and it is pruned, fine-tuned and quantized as it is."""
    task = load_task("tests.tasks.tabular:make_task", 0)
    assert task.teacher_architecture is None and task.val[0].dtype == torch.float32
    assert task.train[1].dtype == torch.int64
    pipeline = CompressionPipeline(task, tmp_path, TrainingRecipe(finetune_epochs=1), seed=0)
    assert pipeline.teacher.cache_hit, "a pretrained teacher is not trained again"
    built = pipeline.build(Candidate(None, 0.25, 8, None, "single", 1, 1))
    assert built.params < sum(p.numel() for p in pipeline.teacher.model.parameters())
    assert built.serving(task.val[0]).argmax(1).eq(task.val[1]).float().mean() > 0.8


class TokenLSTM(nn.Module):
    """Token ids -> embedding -> LSTM -> (optionally a hidden Linear) -> head."""

    def __init__(self, hidden_linear: bool):
        super().__init__()
        self.embed, self.rnn = nn.Embedding(50, 8), nn.LSTM(8, 16, batch_first=True)
        self.mid = nn.Linear(16, 12) if hidden_linear else nn.Identity()
        self.head = nn.Linear(12 if hidden_linear else 16, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(ids))
        return self.head(torch.relu(self.mid(out[:, -1])))


def test_a_recurrent_model_prunes_its_linear_layers_and_keeps_the_lstm_whole() -> None:
    ids = torch.randint(1, 50, (20, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % 2
    task = Task(name="lstm", train=(ids, labels), val=(ids, labels), test=(ids, labels),
                teacher_architecture=lambda: TokenLSTM(True))
    half = PruningChoice(0.5, "l1", "uniform", 1)
    assert pruning_problem(TokenLSTM(True), half, task) is None
    model = prune_channels(TokenLSTM(True), half, task)  # mid: 12 -> 6 kept, aligned to 8
    assert model.mid.out_features == 8 and model.rnn.hidden_size == 16 and model(ids).shape == (20, 2)
    assert "removes nothing" in pruning_problem(TokenLSTM(False), half, task)  # only the LSTM and the head


class SignalNet(nn.Module):
    """A 1-D conv net (audio, sensors): Conv1d + BatchNorm1d stages, pooled, then the head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Conv1d(16, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(-1))


@pytest.mark.parametrize("make, inputs", [(SignalNet, lambda: torch.randn(12, 1, 32)),
                                          (lambda: TokenBag(1.0, 1), lambda: torch.randint(0, 2400, (12, 7)))],
                         ids=["conv1d", "embedding"])
def test_a_pruned_model_of_every_prunable_layer_kind_is_restored_from_its_cached_weights(make, inputs) -> None:
    """The stage cache stores pruned weights; reloading them cuts a fresh model to their shapes."""
    torch.manual_seed(0)
    x = inputs()
    labels = torch.arange(12) % 2
    task = Task(name="kinds", train=(x, labels), val=(x, labels), test=(x, labels), teacher_architecture=make)
    pruned = prune_channels(make().eval(), PruningChoice(0.5, "l1", "uniform", 1), task)
    fresh = make().eval()
    prune_to_shapes(fresh, pruned.state_dict(), x[:1])
    fresh.load_state_dict(pruned.state_dict())
    assert sum(p.numel() for p in fresh.parameters()) < sum(p.numel() for p in make().parameters())
    assert torch.equal(fresh(x), pruned(x))


class ReturnsMore(nn.Module):
    """A classifier whose forward returns its logits with other outputs, as a dict or tuple."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.body, self.head = kind, nn.Sequential(nn.Linear(20, 32), nn.ReLU()), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> object:
        hidden = self.body(x)
        logits = self.head(hidden)
        return {"logits": logits, "hidden": hidden} if self.kind == "dict" else (logits, hidden)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_a_teacher_returning_logits_among_other_outputs_is_compressed(tmp_path: Path, user_task: str, kind: str) -> None:
    task = load_task(user_task, 0)
    raw = dataclasses.replace(task, teacher_architecture=lambda: ReturnsMore(kind), student_architecture=None)
    pipeline = CompressionPipeline(with_logits_outputs(raw), tmp_path, TrainingRecipe(teacher_epochs=2, finetune_epochs=1),
                                   seed=0)
    built = pipeline.build(Candidate(None, 0.25, 8, None, "single", 1, 1))
    logits = built.serving(task.val[0])
    assert isinstance(logits, torch.Tensor) and logits.shape == (len(task.val[1]), 3)
    assert built.params < sum(p.numel() for p in pipeline.teacher.model.parameters())


def test_task_loading_errors_are_one_line_and_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_task.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "wrong_task.py").write_text("def make_task(seed):\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskLoadError, match="importing module 'broken_task' failed.*PYTHONPATH"):
        load_task("broken_task:make_task", 0)
    with pytest.raises(TaskLoadError, match="returned int"):
        load_task("wrong_task:make_task", 0)
    with pytest.raises(TaskLoadError, match="has no callable 'nope'"):
        load_task("wrong_task:nope", 0)
    with pytest.raises(TaskLoadError, match="neither a built-in"):
        load_task("cifar", 0)


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_float_exports_load_and_match_on_another_batch_size(tmp_path: Path, digits_task, small_cnn, fmt: str) -> None:
    import numpy as np
    import onnxruntime

    path = export_model(small_cnn, "torch", digits_task.val[0][:8], fmt, tmp_path / "model")
    batch = digits_task.val[0][8:40]
    with torch.no_grad():
        expected = small_cnn(batch)
    if fmt == "torchscript":
        actual = torch.jit.load(str(path))(batch)
    elif fmt == "torch_export":
        actual = torch.export.load(str(path)).module()(batch)
    else:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = torch.from_numpy(np.asarray(session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]))
    assert torch.allclose(actual, expected, atol=1e-4)


def test_int8_exports_to_torchscript_and_onnx_is_refused_with_a_reason(tmp_path: Path, digits_task, small_cnn) -> None:
    int8 = quantize(small_cnn, 8, None, digits_task.train[0][:64]).serving
    path = export_model(int8, "torch", digits_task.val[0][:8], "torchscript", tmp_path / "q")
    assert torch.allclose(torch.jit.load(str(path))(digits_task.val[0][:8]), int8(digits_task.val[0][:8]), atol=1e-3)
    with pytest.raises(ExportError, match="onnx export failed.*try --format torchscript"):
        export_model(int8, "torch", digits_task.val[0][:8], "onnx", tmp_path / "q")


def test_digits_transformer_teacher_dynamic_int8_and_ffn_pruning(tmp_path: Path) -> None:
    task = load_task("digits-transformer", 0)
    teacher = CompressionPipeline(task, tmp_path, TrainingRecipe(), seed=0).teacher.model
    accuracy = evaluate_accuracy(teacher, task.test, task.metric)
    assert accuracy >= 0.95

    int8 = quantize(teacher, 8, None, task.train[0][:64])
    assert int8.path == "dynamic-int8" and not int8.simulated
    assert state_dict_bytes(teacher) / int8.model_bytes >= 3.0
    assert accuracy - evaluate_accuracy(int8.serving, task.test, task.metric) <= 0.01
    assert not any(type(m) is nn.Linear for m in int8.serving.modules()), "every Linear runs int8"

    example = task.train[0][:1]
    pruned = prune_channels(copy.deepcopy(teacher), PruningChoice(0.5), task)
    assert count_macs_and_params(pruned, example)[1] < 0.8 * count_macs_and_params(teacher, example)[1]
    assert pruned.blocks[0].ffn.fc1.out_features == 128, "feed-forward hidden width halves"
    assert pruned.blocks[0].attn.q.out_features == teacher.blocks[0].attn.q.out_features, "heads stay whole"
    assert pruned(example).shape == (1, 10)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_serving_leaves_integer_inputs_alone(dtype: str) -> None:
    """Token ids above 2048 do not survive a cast to float16 (7545 -> 7544); only floating
    inputs may be cast, so the 16-bit model must look up the same embedding rows."""
    from tests.tasks.token_bag import TokenBag, make_task

    torch.manual_seed(0)
    model = TokenBag().eval()
    ids = make_task(0).val[0][:32]
    assert (ids > 2048).any() and ids.dtype == torch.int64
    half = quantize(model, 16, dtype, ids).serving
    with torch.no_grad():
        reference, served = model(ids), half(ids)
    assert served.dtype == torch.float32
    assert torch.allclose(served, reference, atol=0.05), "the same ids were looked up"
