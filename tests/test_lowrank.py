"""Low-rank factorisation of Linear layers: fewer parameters, cached, measured even where it does not pay."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from slimsearch.pipelines import CompressionPipeline, TrainingRecipe, load_task
from slimsearch.pipelines.lowrank import factorizable, factorize
from slimsearch.pipelines.stages import count_macs_and_params
from slimsearch.spaces import Candidate


def test_a_full_rank_pair_reproduces_the_layer_and_a_low_rank_one_has_fewer_weights() -> None:
    task = load_task("digits-transformer", 0)
    torch.manual_seed(0)
    model = task.teacher_architecture().eval()
    names = factorizable(model, task)
    assert names and all("head" not in name for name in names), "the classifier head keeps its weights"
    rows = task.val[0][:8]
    exact = factorize(copy.deepcopy(model), 0.999, task).eval()
    with torch.no_grad():
        assert torch.allclose(exact(rows), model(rows), atol=1e-3), "keeping every singular value changes nothing"
    params = count_macs_and_params(model, task.train[0][:1])[1]
    low = factorize(copy.deepcopy(model), 0.25, task)
    assert isinstance(low.get_submodule(names[0]), nn.Sequential)
    assert count_macs_and_params(low, task.train[0][:1])[1] < 0.75 * params


def test_a_factorised_candidate_is_fine_tuned_cached_and_measured_even_when_it_does_not_pay(tmp_path: Path) -> None:
    task = load_task("digits-transformer", 0)
    recipe = TrainingRecipe(teacher_epochs=1, finetune_epochs=1)
    pipeline = CompressionPipeline(task, tmp_path, recipe, seed=0)
    teacher = pipeline.build(Candidate(None, 0.0, 32, None, "single", 1, 1))
    low = pipeline.build(Candidate(None, 0.0, 32, None, "single", 1, 1, rank_ratio=0.25))
    assert low.params < teacher.params and not low.cache_hits["lowrank"]
    again = CompressionPipeline(task, tmp_path, recipe, seed=0).build(Candidate(None, 0.0, 32, None, "single", 1, 1,
                                                                                rank_ratio=0.25))
    assert again.cache_hits["lowrank"]
    rows = task.val[0][:8]
    with torch.no_grad():
        assert torch.allclose(low.serving(rows), again.serving(rows), atol=1e-6)
    wide = pipeline.build(Candidate(None, 0.0, 8, None, "single", 1, 1, rank_ratio=0.9))
    assert wide.params > teacher.params, "rank 0.9 of a square layer costs more weights: built and measured anyway"
    assert wide.quant_path == "dynamic-int8", "the factor pairs quantize like any Linear"
