"""``select``: choose a deployment under limits, re-measure, export and register it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from slimsearch.search.cli.common import StorageOption, StudyArg, StudyOption, app, clean_errors, console, read_study
from slimsearch.search.config import ConfigError
from slimsearch.search.objectives import (
    LATENCY_P50_CI_HIGH_MS,
    LATENCY_P50_CI_LOW_MS,
    LATENCY_P50_MS,
    LATENCY_P95_MS,
    MEMORY_MB,
    MODEL_MB,
)
from slimsearch.search.store import records
from slimsearch.spaces import DEFAULT_RUNTIME, export_formats, runtime_spec

# Selection, deployment and registration import torch and MLflow: inside the command.
if TYPE_CHECKING:
    from slimsearch.search.review.selection import Selection
    from slimsearch.search.review.study_review import StudyReview


@app.command()
@clean_errors
def select(
    target: Optional[str] = StudyArg,
    study: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
    trial_number: Optional[int] = typer.Option(None, "--trial", help="deploy this trial (limits still checked)"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="limit on p95 latency of one batch"),
    max_memory_mb: Optional[float] = typer.Option(None, "--max-memory-mb", help="limit on serving memory (MiB)"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", "--max-accuracy-drop",
                                             help="limit on how much worse than the teacher on the task's metric, in "
                                                  "its units (accuracy: teacher minus candidate)"),
    prefer: str = typer.Option("knee", "--prefer", help="latency | memory | knee | the task's metric (e.g. accuracy)"),
    formats: list[str] = typer.Option([], "--format", help=f"{' | '.join(export_formats())} (repeatable); only "
                                      "trials exportable so are chosen (default: the format the trial was served in)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="directory (default: <output_dir>/deploy-STUDY)"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="registered model name (default: slimsearch-STUDY)"),
    alias: str = typer.Option("champion", "--alias", help="alias set on the new model version"),
    register: bool = typer.Option(True, "--register/--no-register", help="register an MLflow model version"),
    allow_simulated: bool = typer.Option(False, "--allow-simulated", help="also consider fake-quant (simulated) bit widths"),
    allow_noisy: bool = typer.Option(False, "--allow-noisy", help="deploy even if the re-measurement was timed on a "
                                     "busy host"),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="first re-measure the front together when a "
                                 "member was not (the run stopped before its end)"),
) -> None:
    """Choose a deployment under limits, re-measure it, export it and register it in MLflow."""
    from slimsearch.search.deploy.deployment import build_deployment, confirmed_review
    from slimsearch.search.deploy.registry import register_model
    from slimsearch.search.loop.library_logs import route_library_logs
    from slimsearch.search.review.study_review import StudyReview
    from slimsearch.search.review.selection import PREFERENCES, DeploymentError, Limits
    from slimsearch.search.review.selection import select as choose

    unknown = sorted(set(formats) - set(export_formats()))
    if unknown:
        raise ConfigError(f"--format {unknown[0]} is not an export format; choose from {', '.join(export_formats())}")
    found, study_config, _ = read_study(target, study, storage)
    review, study_name = StudyReview(found), found.study_name
    if confirm:
        review = confirmed_review(review, console.print)
    if prefer not in (*PREFERENCES, review.quality.name):
        raise ConfigError(f"--prefer must be one of {', '.join(PREFERENCES)}, {review.quality.name}; got '{prefer}'")
    route_library_logs(Path(study_config.output_dir) / "logs" / f"{study_name}-select.log")
    limits = Limits(max_latency_ms, max_memory_mb, max_drop, review.quality)
    selection = choose(review, limits, prefer, allow_simulated, trial_number, exportable_as=formats)
    if selection.chosen is None:
        closest = "; ".join(
            f"trial {t.number} ({t.user_attrs.get(records.SUMMARY, '')}): {', '.join(selection.excluded[t.number])}"
            for t in selection.closest
        )
        which = f"trial {trial_number} does not satisfy" if trial_number is not None else "no completed trial satisfies"
        raise DeploymentError(f"{which} these limits; closest: {closest or 'none (no such completed trial)'}")
    console.print(_selection_table(selection, review))
    chosen = selection.chosen
    console.print(f"chosen: trial {chosen.number} ({chosen.user_attrs[records.SUMMARY]}), preference {prefer}; "
                  "rebuilding and re-measuring in isolation...")
    directory = output or Path(study_config.output_dir) / f"deploy-{study_name}"
    # The registered pyfunc serves what the trial measured: its runtime's export format.
    served = runtime_spec(chosen.user_attrs[records.CANDIDATE].get("runtime", DEFAULT_RUNTIME)).export_format
    if (register or not formats) and served not in formats:
        formats = [*formats, served]
    deployment = build_deployment(review, chosen, limits, formats, directory, allow_noisy)  # SelectionRefused: exit 3
    m, quality = deployment.remeasured.metrics, review.quality
    console.print(f"re-measured: {quality.name} {m[quality.name]:.4f} (drop {m[quality.drop]:+.4f}), latency p50 "
                  f"{m[LATENCY_P50_MS]:.3f} ms [95% CI {m[LATENCY_P50_CI_LOW_MS]:.3f}-{m[LATENCY_P50_CI_HIGH_MS]:.3f}], "
                  f"p95 {m[LATENCY_P95_MS]:.3f} ms, memory {m[MEMORY_MB]:.1f} MiB, model {m[MODEL_MB]:.3f} MiB")
    for fmt, path in deployment.files.items():
        console.print(f"exported {fmt}: {path} (outputs verified against the compressed model)")
    console.print(f"deployment spec: {deployment.spec_path}")
    if register:
        registration = register_model(
            study_config.tracking_uri,
            study_config.tracking.experiment,
            study_name,
            chosen.number,
            model_name or f"slimsearch-{study_name}",
            alias,
            deployment.files[served],
            [deployment.spec_path, *deployment.files.values()],
            deployment.spec["serving"],
            {k: f"{m[k]:.6g}" for k in (quality.name, LATENCY_P50_MS, LATENCY_P95_MS, MEMORY_MB, MODEL_MB)},
            deployment.example,
        )
        console.print(f"registered: models:/{registration.model_name}@{registration.alias} "
                      f"(version {registration.version}, run {registration.run_id})")


def _selection_table(selection: Selection, review: StudyReview) -> Table:
    table = Table(title=f"{len(selection.eligible)} eligible, {len(selection.excluded)} excluded")
    for column in ("trial", "configuration", review.quality.name, "p95 ms", "memory MB", "status"):
        table.add_column(column, justify="left" if column in ("configuration", "status") else "right")
    for trial in review.complete:
        metrics = trial.user_attrs[records.METRICS]
        status = ("[green]chosen[/]" if trial is selection.chosen else
                  "eligible" if trial.number not in selection.excluded else
                  "[dim]" + "; ".join(selection.excluded[trial.number]) + "[/]")
        table.add_row(str(trial.number), trial.user_attrs.get(records.SUMMARY, ""), f"{metrics[review.quality.name]:.4f}",
                      f"{metrics[LATENCY_P95_MS]:.3f}", f"{metrics[MEMORY_MB]:.1f}", status)
    return table
