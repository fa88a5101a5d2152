"""``slimsearch`` command line: run, worker, status, front, report, select, ui, cache, validate, space.

Known problems (bad config, task that fails to import, study mismatch) print one line
``error: ...`` naming the problem and the fix, and exit 2; Ctrl-C exits 130 after the
front is written, with the command to resume.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, TypeVar

import optuna
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimsearch.search.config import ConfigError, SlimsearchConfig, format_validation_error, load_config
from slimsearch.search.objectives import QualityMetric
from slimsearch.search.store.confirmation import stored_confirmation, teacher_metrics
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import FrontRow, front_rows, hypervolume
from slimsearch.search.store.storage import stale_trials
from slimsearch.search.store.study import load_existing_study
from slimsearch.spaces import (
    DEFAULT_RUNTIME,
    SlimsearchError,
    describe_space,
    export_formats,
    rejection_reason,
    runtime_spec,
    sample_candidates,
)
from slimsearch.search.store import records

# The layers that import torch or MLflow are imported inside the commands that use them, so
# `--help`, `status` and `front` start in about a second and stay small.
if TYPE_CHECKING:
    from slimsearch.search.review.study_review import StudyReview
    from slimsearch.search.review.selection import Selection

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Overnight multi-objective model-compression search.")
# Logs of overnight runs are files, not terminals: give them room for the front table.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
F = TypeVar("F", bound=Callable[..., object])

StudyArg = typer.Argument(None, metavar="[CONFIG|STUDY]", show_default=False,
                          help="YAML config of the search (or a study name in the default output_dir)")
StudyOption = typer.Option(None, "--study", help="study name (default: the config's search.study_name)")
StorageOption = typer.Option(None, "--storage", help="Optuna storage URL (default: the config's)")
ConfigArg = typer.Argument(None, help="YAML config; omitted = the embedded digits default", show_default=False)


def _read_study(target: str | None, study: str | None, storage: str | None
                ) -> tuple[optuna.Study, SlimsearchConfig, str]:
    """The study a read command shows -- named by a config file like ``run`` takes, or by a
    bare study name (the embedded default config's output_dir), with ``--study`` /
    ``--storage`` on top -- the config it last ran with (where its MLflow store and outputs
    are; the given one for a study that stored none this version reads) and its storage URL."""
    if target is not None and not Path(target).is_file() and not target.endswith((".yaml", ".yml")):
        given, study = SlimsearchConfig(), study or target
    else:
        given = load_config(Path(target) if target else None)
    storage_url = storage or given.storage_url
    found = load_existing_study(storage_url, study or given.search.study_name)
    try:
        ran_with = SlimsearchConfig.model_validate(found.user_attrs[records.STUDY_CONFIG])
    except (KeyError, ValidationError):
        ran_with = given
    return found, ran_with, storage_url


@contextlib.contextmanager
def _graceful_stop(stop: threading.Event | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM stop the command, even where SIGINT was inherited as ignored
    (background jobs, nohup): an overnight run must stop cleanly when a scheduler ends it.

    With ``stop``, the first signal only sets it (the search finishes the running trial, so
    nothing is left half-written) and the second raises KeyboardInterrupt; without, the first raises.
    """

    def interrupt(signum: int, frame: object) -> None:
        if stop is None or stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        errors.print("[yellow]stopping:[/] a running trial finishes first, a teacher in training stops at its next "
                     "batch (Ctrl-C again to abort at once)", soft_wrap=True)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _clean_errors(command: F) -> F:
    """Turn the errors users can fix into one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with _graceful_stop():
                return command(*args, **kwargs)
        except SlimsearchError as exc:
            errors.print(f"[{exc.colour}]{exc.label}:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            errors.print("[yellow]stopped:[/] interrupted before the first trial; run the same command again")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_clean_errors
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
    with _graceful_stop(stop):
        summary = SearchDriver(cfg, console, stop).run(n_trials, timeout, warm_start)
    study = load_existing_study(cfg.storage_url, cfg.search.study_name)
    _print_front(study, list(study.user_attrs[records.STUDY_OBJECTIVES]))  # as the run resolved them for the task's metric
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
@_clean_errors
def worker(
    config: Optional[Path] = ConfigArg,
    index: Optional[int] = typer.Option(None, "--index", min=1, help="worker number (default: from the process id)"),
) -> None:
    """Join a running study (same config) from this or another host until its budget is used."""
    from slimsearch.search.loop.driver import SearchDriver

    cfg = load_config(config)
    stop = threading.Event()
    with _graceful_stop(stop):
        summary = SearchDriver(cfg, console, stop, worker=index or os.getpid()).run()
    console.print(f"worker done: {summary.completed} complete, {summary.failed} failed, {summary.pruned} stopped early, "
                  f"{summary.rejected} rejected")


@app.command()
@_clean_errors
def status(
    target: Optional[str] = StudyArg,
    study_name: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
) -> None:
    """Where a study stands, read from its storage (also while a search runs elsewhere)."""
    study, cfg, _ = _read_study(target, study_name, storage)
    ledger = StudyLedger.for_reading(study)  # from the search's snapshot: no read of every trial
    outcomes = ledger.outcomes + Counter(t.state.name for t in ledger.unfinished.values())
    start, target = study.user_attrs.get(records.STUDY_BUDGET, [0, 0])
    table = Table(title=f"study {study.study_name}", show_header=False)
    table.add_row("budget", f"{ledger.evaluated - start} of {target - start} evaluated in the latest run"
                  if records.STUDY_BUDGET in study.user_attrs else "none yet (the run stopped before its first trial)")
    table.add_row("trials", ", ".join(f"{state} {n}" for state, n in sorted(outcomes.items())) or "none")
    now = datetime.datetime.now()
    running = ledger.running()
    stale = {t.number for t in stale_trials(study, cfg.search.heartbeat_s, running=running)}
    for t in running:
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0
        state = "worker gone (failed as stale by the next worker or run)" if t.number in stale else f"{age:.0f} s"
        table.add_row(f"running #{t.number}", f"worker {t.user_attrs.get(records.WORKER, '?')}, {state}, "
                      f"{t.user_attrs.get(records.SUMMARY, 'sampling')}")
    if records.STUDY_REFERENCE_POINT in study.user_attrs:
        front = ledger.front_trials()
        directions = list(study.user_attrs[records.STUDY_OBJECTIVES].values())
        table.add_row("front", f"{len(front)} trials, hypervolume "
                      f"{hypervolume(front, directions, study.user_attrs[records.STUDY_REFERENCE_POINT]):.4g}")
    else:
        table.add_row("front", "none yet (no teacher baseline: the run stopped before measuring it)")
    console.print(table)


@app.command()
@_clean_errors
def front(
    target: Optional[str] = StudyArg,
    study_name: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
) -> None:
    """Print the Pareto front of a study from its storage."""
    study, cfg, _ = _read_study(target, study_name, storage)
    _print_front(study, list(study.user_attrs.get(records.STUDY_OBJECTIVES) or cfg.objectives))


@app.command()
@_clean_errors
def report(
    target: Optional[str] = StudyArg,
    study: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
    output: Path = typer.Option(None, "--output", "-o", help="HTML file (default: <output_dir>/report-STUDY.html)"),
) -> None:
    """Write one self-contained HTML report: Pareto plots, sortable front table, knee point."""
    from slimsearch.search.review.study_review import StudyReview

    found, study_config, _ = _read_study(target, study, storage)
    review = StudyReview(found)
    path = output or Path(study_config.output_dir) / f"report-{found.study_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(review.html())
    knee = f"; knee: trial {review.knee.number} ({review.knee.user_attrs.get(records.SUMMARY, '')})" if review.knee else ""
    console.print(f"wrote {path} ({len(review.front)} front trials{knee})")


@app.command()
@_clean_errors
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
    found, study_config, _ = _read_study(target, study, storage)
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
                  f"{m['latency_p50_ms']:.3f} ms [95% CI {m['latency_p50_ci_low_ms']:.3f}-{m['latency_p50_ci_high_ms']:.3f}], "
                  f"p95 {m['latency_p95_ms']:.3f} ms, memory {m['memory_mb']:.1f} MiB, model {m['model_mb']:.3f} MiB")
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
            {k: f"{m[k]:.6g}" for k in (quality.name, "latency_p50_ms", "latency_p95_ms", "memory_mb", "model_mb")},
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
                      f"{metrics['latency_p95_ms']:.3f}", f"{metrics['memory_mb']:.1f}", status)
    return table


@app.command()
@_clean_errors
def ui(
    target: Optional[str] = StudyArg,
    study_name: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
    host: str = typer.Option("127.0.0.1", "--host", help="bind address (keep loopback unless you mean it)"),
    port: int = typer.Option(5000, "--port"),
    optuna_dashboard: bool = typer.Option(False, "--optuna-dashboard", help="also start optuna-dashboard on --optuna-port"),
    optuna_port: int = typer.Option(8080, "--optuna-port"),
) -> None:
    """Start the MLflow UI on the study's tracking store (and optuna-dashboard); Ctrl-C stops them."""
    from slimsearch.dashboards.launch import LaunchError, start_mlflow_ui, start_optuna_dashboard
    from slimsearch.search.store.tracking import trials_view_path

    study, cfg, storage_url = _read_study(target, study_name, storage)
    servers = []
    try:
        servers.append(start_mlflow_ui(cfg.tracking_uri, host, port))
        if optuna_dashboard:
            servers.append(start_optuna_dashboard(storage_url, host, optuna_port))
        pages = {"MLflow UI": trials_view_path(cfg.tracking_uri, cfg.tracking.experiment, study.study_name)}
        for server in servers:
            console.print(f"{server.name}: [bold]{server.url}{pages.get(server.name, '')}[/]", soft_wrap=True)
        console.print(f"the trials of '{study.study_name}' (experiment '{cfg.tracking.experiment}') with the "
                      "objectives as columns; filter with tags.pareto = 'true'. Ctrl-C to stop.", soft_wrap=True)
        while all(server.process.poll() is None for server in servers):
            time.sleep(0.5)
        raise LaunchError("a server stopped unexpectedly")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        for server in servers:
            server.stop()


cache_app = typer.Typer(no_args_is_help=True, help="The stage cache (trained teachers, students, pruned weights).")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@_clean_errors
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
@_clean_errors
def cache_clear(
    config: Optional[Path] = ConfigArg,
    stage: Optional[str] = typer.Option(None, "--stage", help="only this stage (slimsearch cache info lists them: "
                                        "teacher, teacher-logits, teacher-features, student, pruned, qat, onnx)"),
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
@_clean_errors
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
@_clean_errors
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


def _print_front(study: optuna.Study, objectives: list[str]) -> None:
    """The front table, under a line saying whether (and when) its latencies were confirmed."""
    facts, confirmed = stored_confirmation(study)
    rows = front_rows(study, objectives)
    table = _front_table(rows, objectives, teacher_metrics(study), QualityMetric.of(study.user_attrs))
    unconfirmed = [str(row.number) for row in rows if row.confirmed != "yes"]
    if not confirmed:
        table.caption = "latencies as each trial measured them (the front is re-measured together when a run ends)"
    else:
        table.caption = (f"latencies re-measured together at {facts['at']} ({facts['passes']} interleaved passes)"
                         + (f"; not confirmed: trial {', '.join(unconfirmed)}" if unconfirmed else ""))
    console.print(table)


def _front_table(rows: list[FrontRow], objectives: list[str], teacher: dict[str, float],
                 quality: QualityMetric) -> Table:
    noisy = sum(row.within_noise_of is not None for row in rows)
    table = Table(title=f"Pareto front ({len(rows) - noisy} feasible non-dominated trials"
                        + (f"; {noisy} more win only within measurement noise" if noisy else "") + ")")
    for column in ("trial", "configuration", *objectives, quality.drop, quality.test, "model MB", "vs teacher"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for row in rows:
        table.add_row(
            str(row.number),
            row.summary + (" [magenta](simulated)[/]" if row.simulated else "")
            + (f" [dim](within noise of trial {row.within_noise_of})[/]" if row.within_noise_of is not None else ""),
            *(f"{row.values[o]:.4g}" for o in objectives),
            f"{row.quality_drop:+.4f}",
            f"{row.test_quality:.4f}",
            f"{row.model_mb:.3f}",
            _versus_teacher(row, teacher),
        )
    return table


def _versus_teacher(row: FrontRow, teacher: dict) -> str:
    """Measured ratios against the teacher (its latency as confirmed beside the front), e.g.
    ``3.6x smaller 5.1x faster``."""
    parts = []
    if teacher.get("model_mb") and row.model_mb > 0:
        parts.append(ratio_words(teacher["model_mb"] / row.model_mb, "smaller", "larger"))
    latency = row.values.get("latency_p50_ms")
    if teacher.get("latency_p50_ms") and latency:
        parts.append(ratio_words(teacher["latency_p50_ms"] / latency, "faster", "slower"))
    return " ".join(parts)


def ratio_words(ratio: float, better: str, worse: str) -> str:
    """``2.5x smaller`` / ``7.0x slower``, never ``0.1x faster``."""
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


if __name__ == "__main__":  # `python -m slimsearch.search.cli`, same as the console script
    app()
