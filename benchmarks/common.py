"""What every benchmark shares: the built-in teachers, one serving measurement, provenance.

Benchmarks are scripts, not tests: each prints the figures it measured and the ratio it
is judged by, headed by the run's provenance (date, commit, hardware) so a number is
never quoted without the run that produced it. Verdicts are printed by :func:`goal` in
one fixed form, which ``run_all`` collects into the goal table of ``benchmarks/README.md``.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from slimsearch.evaluators import (ServingMeasurement, TimingProtocol, hardware_identity, measure_serving, plan_ranks,
                                   save_artifact, serving_runtime)
from slimsearch.pipelines import CompressionPipeline, Task, load_task
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.driver import SearchDriver
from slimsearch.search.loop.recording import RunSummary
from slimsearch.search.store.study import open_study
from slimsearch.spaces import SpaceSpec, runtime_spec

CACHE = Path(__file__).resolve().parents[1] / "slimsearch-out" / "cache"
BATCH = 64


def provenance() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    hw = hardware_identity()
    return (f"run {datetime.datetime.now().isoformat(timespec='minutes')}, commit {commit or 'unknown'}, "
            f"{hw['cpu']} ({hw['cores']} cores), torch {hw['torch']}")


def pipeline(task_name: str) -> CompressionPipeline:
    """The built-in task's pipeline on the bench cache, its teacher trained with the recipe a
    search would use (the config's defaults under the task's own training_defaults)."""
    task = load_task(task_name, seed=0)
    config = SlimsearchConfig().for_task(task)
    return CompressionPipeline(task, CACHE, config.training.recipe(), seed=0)


def teacher(task_name: str) -> tuple[Task, nn.Module]:
    """The built-in task and its trained teacher (cached in the bench cache)."""
    built = pipeline(task_name)
    return built.task, built.teacher.model


def serve(model: nn.Module, task: Task, strategy: str = "single", degree: int = 1, threads: int = 1,
          protocol: TimingProtocol = TimingProtocol(), runtime: str = "torch") -> ServingMeasurement:
    """Measure ``model`` served on ``runtime`` with ``strategy`` in the isolated probe, as a trial would."""
    example = task.serving_batch(BATCH)
    if runtime_spec(runtime).converts:  # fp32, as the search converts it
        converter = serving_runtime(runtime)
        model = converter.from_buffers(converter.convert(model, 32, example))
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as workdir:
        artifact = save_artifact(runtime, model, example, Path(workdir) / "model.pt")
        plan = plan_ranks(model, example, strategy, degree, artifact)
        return measure_serving(artifact, plan, example, threads=threads,
                               protocol=protocol, timeout_s=600)


def cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (candidate summaries contain ``|``)."""
    return text.replace("|", "\\|")


def goal(name: str, measured: str, target: str, met: bool) -> None:
    """Print one verdict line (the form ``run_all`` collects)."""
    print(f"goal: {cell(name)} | {cell(measured)} | {cell(target)} | {'met' if met else 'NOT met'}")


def run_search(root: Path, name: str, *, task: str = "digits", space: SpaceSpec | None = None,
               enqueue: list[dict[str, object]] | None = None, enqueue_attrs: dict[str, object] | None = None,
               evaluation: dict[str, object] | None = None, objectives: dict[str, str] | None = None,
               constraints: list[str] | None = None, **search: object) -> tuple[RunSummary, SlimsearchConfig]:
    """A search of ``task`` (default space unless ``space``) in ``root/name``: own stores and
    stage cache, holding only a copy of the trained teacher, so no run profits from another's
    students. ``enqueue`` puts exact candidates (Optuna params) first in the study, so runs
    can be compared on equal work (each with ``enqueue_attrs`` as user attributes);
    ``search.*`` overrides go in as keywords."""
    raw = SlimsearchConfig().model_dump(exclude={"training"})  # unset: the task's training_defaults apply
    raw["output_dir"] = str(root / name)
    raw["task"] = task
    if space is not None:
        raw["space"] = space.model_dump()
    raw["search"].update(study_name=name, **search)
    raw["evaluation"].update(evaluation or {})
    raw["constraints"] = constraints if constraints is not None else raw["constraints"]
    raw["objectives"] = objectives or raw["objectives"]
    task_object = load_task(task, SlimsearchConfig.model_validate(raw).search.seed)
    # Resolved as the driver resolves it, so the study stores the same training section.
    config = SlimsearchConfig.model_validate(raw).for_task(task_object)
    _copy_teacher(config, task_object)
    if enqueue:
        study = open_study(config)
        for params in enqueue:
            study.enqueue_trial(params, user_attrs=enqueue_attrs)
    return SearchDriver(config, Console(quiet=True)).run(), config


def _copy_teacher(config: SlimsearchConfig, task: Task) -> None:
    """Train (once, in the shared bench cache) and copy the teacher and its logits: the
    teacher is prepared before a search loop starts, so this saves time, not loop time."""
    pipeline = CompressionPipeline(task, CACHE, config.training.recipe(), config.search.seed)
    pipeline.soft_targets  # noqa: B018 -- computed into the cache
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    for entry in CACHE.glob("teacher*.pt"):
        if not (config.cache_dir / entry.name).exists():
            shutil.copy2(entry, config.cache_dir / entry.name)


torch.set_num_threads(2)
