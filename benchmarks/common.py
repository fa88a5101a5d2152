"""What every benchmark shares: the built-in teachers, one serving measurement, provenance.

Benchmarks are scripts, not tests: each prints the figures it measured and the ratio it
is judged by, headed by the run's provenance (date, commit, hardware) so a number is
never quoted without the run that produced it.
"""

from __future__ import annotations

import datetime
import subprocess
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from slimsearch.evaluators import ServingMeasurement, TimingProtocol, hardware_identity, measure_serving, plan_ranks, save_artifact
from slimsearch.pipelines import CompressionPipeline, Task, TrainingRecipe, load_task
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.driver import RunSummary, SearchDriver

CACHE = Path(__file__).resolve().parents[1] / "slimsearch-out" / "cache"
BATCH = 64


def provenance() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    hw = hardware_identity()
    return (f"run {datetime.datetime.now().isoformat(timespec='minutes')}, commit {commit or 'unknown'}, "
            f"{hw['cpu']} ({hw['cores']} cores), torch {hw['torch']}")


def teacher(task_name: str) -> tuple[Task, nn.Module]:
    """The built-in task and its trained teacher (cached in the demo's stage cache)."""
    task = load_task(task_name, seed=0)
    return task, CompressionPipeline(task, CACHE, TrainingRecipe(), seed=0).teacher.model


def serve(model: nn.Module, task: Task, strategy: str = "single", degree: int = 1, threads: int = 1,
          protocol: TimingProtocol = TimingProtocol()) -> ServingMeasurement:
    """Measure ``model`` served with ``strategy`` in the isolated probe, as a trial would."""
    example = task.train[0][:BATCH]
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as workdir:
        artifact = save_artifact(model, example, Path(workdir) / "model.pt")
        plan = plan_ranks(model, example, strategy, degree, artifact)
        return measure_serving(artifact, plan, task.input_shape, batch_size=BATCH, threads=threads,
                               protocol=protocol, timeout_s=600)


def run_search(root: Path, name: str, **search: object) -> tuple[RunSummary, SlimsearchConfig]:
    """The embedded digits search in ``root/name`` (own stores and stage cache), with
    ``search.*`` overrides; returns its summary and the config it ran with."""
    raw = SlimsearchConfig().model_dump()
    raw["output_dir"] = str(root / name)
    raw["search"].update(study_name=name, **search)
    config = SlimsearchConfig.model_validate(raw)
    return SearchDriver(config, Console(quiet=True)).run(), config


torch.set_num_threads(2)
