"""``cache``, ``validate`` and ``space``: looking after the stage cache and checking a
config before a night is spent on it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from slimsearch.search.cli.common import ConfigArg, app, clean_errors, console
from slimsearch.search.config import ConfigError, load_config
from slimsearch.spaces import describe_space, rejection_reason, sample_candidates


cache_app = typer.Typer(no_args_is_help=True, help="The stage cache (trained teachers, students, pruned weights).")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@clean_errors
def cache_info(config: Optional[Path] = ConfigArg) -> None:
    """Entries and disk use of the stage cache, per stage."""
    from slimsearch.pipelines.cache import StageCache

    cfg = load_config(config)
    table = Table(title=f"stage cache {cfg.cache_dir}")
    for column in ("stage", "entries", "MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    usage = StageCache(cfg.cache_dir).usage()
    for row in usage:
        table.add_row(row.stage, str(row.entries), f"{row.bytes / 2**20:.2f}")
    table.add_row("total", str(sum(r.entries for r in usage)), f"{sum(r.bytes for r in usage) / 2**20:.2f}")
    console.print(table)


@cache_app.command("clear")
@clean_errors
def cache_clear(
    config: Optional[Path] = ConfigArg,
    stage: Optional[str] = typer.Option(None, "--stage", help="only this stage (as slimsearch cache info lists them)"),
) -> None:
    """Delete cached stage outputs (entries in use by a running search are skipped)."""
    from slimsearch.pipelines.cache import StageCache

    cfg = load_config(config)
    cache = StageCache(cfg.cache_dir)
    present = [row.stage for row in cache.usage()]
    if stage is not None and stage not in present:
        raise ConfigError(f"--stage {stage}: no entries of that stage in {cfg.cache_dir}; "
                          f"present: {', '.join(present) or 'none'}")
    deleted, freed, skipped = cache.clear(stage)
    console.print(f"deleted {deleted} entries ({freed / 2**20:.2f} MiB) from {cfg.cache_dir}"
                  + (f"; skipped {skipped} in use by a running search" if skipped else ""))


@app.command()
@clean_errors
def validate(config: Path = typer.Argument(..., help="YAML config to check")) -> None:
    """Check a config file and that its task imports and builds; exit 2 with one line naming the problem."""
    from slimsearch.pipelines import load_task, space_problem
    from slimsearch.pipelines.stages import checked_teacher

    cfg = load_config(config)
    task = load_task(cfg.task, cfg.search.seed)  # an unimportable task is found now, not at run time
    cfg = cfg.for_task(task)  # objectives and constraints speak the task's metric
    if problem := space_problem(task, cfg.space.students_from_scratch):
        raise ConfigError(problem)
    checked_teacher(task, cfg.search.seed)  # the check run does before training, on the untrained teacher
    outputs = f"{task.num_classes} {'outputs' if task.regression else 'classes'}, {task.metric_name} ({task.metric_direction})"
    console.print(f"{config}: ok (task {cfg.task}: {len(task.train[1])} training rows, {outputs}; "
                  f"{len(cfg.objectives)} objectives, study {cfg.search.study_name})")


@app.command()
@clean_errors
def space(
    config: Optional[Path] = ConfigArg,
    samples: int = typer.Option(5, "--samples", min=0, help="how many random candidates to show"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Print the combined search space and a few sampled candidates."""
    cfg = load_config(config)
    table = Table(title="search space")
    for column in ("parameter", "values", "present when"):
        table.add_column(column)
    for row in describe_space(cfg.space):
        table.add_row(*row)
    console.print(table)
    for candidate in sample_candidates(cfg.space, samples, seed):
        reason = rejection_reason(candidate, cfg.evaluation.batch_size)
        console.print(f"  {candidate.summary():<60} " + (f"[yellow]rejected: {reason}[/]" if reason else "[green]ok[/]"))
