"""``status``, ``front``, ``report`` and ``ui``: the commands that read a study (also while
a search runs elsewhere), each naming it by CONFIG or STUDY and ``--storage``."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from slimsearch.search.cli.common import StorageOption, StudyArg, StudyOption, app, clean_errors, console, read_study
from slimsearch.search.cli.front_table import print_front
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import hypervolume
from slimsearch.search.store.storage import stale_trials


@app.command()
@clean_errors
def status(
    target: Optional[str] = StudyArg,
    study_name: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
) -> None:
    """Where a study stands, read from its storage (also while a search runs elsewhere)."""
    study, cfg, _ = read_study(target, study_name, storage)
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
@clean_errors
def front(
    target: Optional[str] = StudyArg,
    study_name: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
) -> None:
    """Print the Pareto front of a study from its storage."""
    study, cfg, _ = read_study(target, study_name, storage)
    print_front(study, list(study.user_attrs.get(records.STUDY_OBJECTIVES) or cfg.objectives))


@app.command()
@clean_errors
def report(
    target: Optional[str] = StudyArg,
    study: Optional[str] = StudyOption,
    storage: Optional[str] = StorageOption,
    output: Path = typer.Option(None, "--output", "-o", help="HTML file (default: <output_dir>/report-STUDY.html)"),
) -> None:
    """Write one self-contained HTML report: Pareto plots, sortable front table, knee point."""
    from slimsearch.search.review.study_review import StudyReview

    found, study_config, _ = read_study(target, study, storage)
    review = StudyReview(found)
    path = output or Path(study_config.output_dir) / f"report-{found.study_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(review.html())
    knee = f"; knee: trial {review.knee.number} ({review.knee.user_attrs.get(records.SUMMARY, '')})" if review.knee else ""
    console.print(f"wrote {path} ({len(review.front)} front trials{knee})")


@app.command()
@clean_errors
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

    study, cfg, storage_url = read_study(target, study_name, storage)
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
