"""``run`` and ``worker``: the commands that search."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from slimsearch.search.cli.common import ConfigArg, app, clean_errors, console, graceful_stop
from slimsearch.search.cli.front_table import print_front
from slimsearch.search.config import ConfigError, SlimsearchConfig, format_validation_error, load_config
from slimsearch.search.store import records
from slimsearch.search.store.study import load_existing_study


@app.command()
@clean_errors
def run(
    config: Optional[Path] = ConfigArg,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="evaluated trials to add (default: search.n_trials)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="stop asking for new trials after SECONDS"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="processes sharing the study (default: search.workers)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="optuna | ray (default: search.backend)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join with --backend ray"),
    warm_start: Optional[str] = typer.Option(None, "--warm-start", metavar="STUDY",
                                             help="a new study starts with STUDY's front (same storage)"),
) -> None:
    """Run (or resume) the search: every trial goes to the Optuna study and to MLflow."""
    from slimsearch.search.loop.driver import SearchDriver

    cfg = load_config(config)
    overrides = {"workers": workers, "backend": backend}
    search = {key: value for key, value in overrides.items() if value is not None}
    if address is not None:
        search["ray"] = {**cfg.search.ray.model_dump(), "address": address}
    if search:
        cfg = _with_search_settings(cfg, search)
    stop = threading.Event()
    with graceful_stop(stop):
        summary = SearchDriver(cfg, console, stop).run(n_trials, timeout, warm_start)
    study = load_existing_study(cfg.storage_url, cfg.search.study_name)
    print_front(study, list(study.user_attrs[records.STUDY_OBJECTIVES]))  # as the run resolved them for the task's metric
    reasons = ", ".join(f"{k} x{v}" for k, v in summary.failure_reasons.items()) or "none"
    rules = ", ".join(f"{k} x{v}" for k, v in summary.pruned_rules.items()) or "none"
    console.print(
        f"trials {summary.first_trial}..{summary.last_trial}: {summary.completed} complete, {summary.failed} failed "
        f"({reasons}), {summary.pruned} stopped early ({rules}), {summary.rejected} rejected, "
        f"{summary.duplicates} repeated proposals answered from the study "
        f"in {summary.seconds / 60:.1f} min "
        f"({summary.trials_per_minute:.2f} trials/min); hypervolume {summary.hypervolume:.4g}"
    )
    console.print(
        f"Review in MLflow: [bold]slimsearch ui {config or ''}[/] opens the trials of '{cfg.search.study_name}' "
        f"(parent run {summary.parent_run_id}) with the objectives as columns; filter with tags.pareto = 'true'.",
        soft_wrap=True,
    )


def _with_search_settings(cfg: SlimsearchConfig, changes: dict[str, object]) -> SlimsearchConfig:
    """The config with command-line overrides of ``search.*``, validated like the file."""
    raw = cfg.model_dump()
    raw["search"].update(changes)
    try:
        return SlimsearchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"command line: {format_validation_error(exc)}") from exc


@app.command()
@clean_errors
def worker(
    config: Optional[Path] = ConfigArg,
    index: Optional[int] = typer.Option(None, "--index", min=1, help="worker number (default: from the process id)"),
) -> None:
    """Join a running study (same config) from this or another host until its budget is used."""
    from slimsearch.search.loop.driver import SearchDriver

    cfg = load_config(config)
    stop = threading.Event()
    with graceful_stop(stop):
        summary = SearchDriver(cfg, console, stop, worker=index or os.getpid()).run()
    console.print(f"worker done: {summary.completed} complete, {summary.failed} failed, {summary.pruned} stopped early, "
                  f"{summary.rejected} rejected")
