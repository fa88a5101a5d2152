"""What several test modules share: running the CLI, reading both stores, polling a search.

CLI text is compared through :func:`cli_text`, which folds rich's wrapping and panel borders,
so no assertion depends on the terminal width (CI runs with ``COLUMNS=80`` and 200).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
import psutil
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from slimsearch.evaluators.probe_processes import PROBE_MODULE
from slimsearch.search.cli import app
from slimsearch.search.store import records
from slimsearch.search.store.study import StudyMismatch, load_existing_study

runner = CliRunner()
_BOX = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛]")


def cli_text(text: str) -> str:
    """``text`` without box-drawing characters and with every run of white space one space."""
    return " ".join(_BOX.sub(" ", text).split())


def run_cli(config: Path, *extra: str) -> str:
    """``slimsearch run CONFIG`` in this process; asserts success and returns the output."""
    result = runner.invoke(app, ["run", str(config), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def stores(out: Path, study_name: str, storage: str | None = None,
           tracking_uri: str | None = None) -> tuple[optuna.Study, MlflowClient, list, object]:
    """The study, an MLflow client, the study's child runs and its (single) parent run."""
    study = load_existing_study(storage or f"sqlite:///{out / 'optuna.db'}", study_name)
    client = MlflowClient(tracking_uri=tracking_uri or f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slimsearch")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("slimsearch.role") == "study"
               and r.data.tags.get("slimsearch.study") == study_name]
    assert len(parents) == 1, "one parent run per study, also after a resume"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return study, client, children, parents[0]


def assert_one_run_per_decided_trial(study: optuna.Study, children: list) -> None:
    """Every finished trial the search decided about has exactly one MLflow run, whichever
    process ran it; answers to repeated proposals and twins' skips have none."""
    finished = [t for t in study.trials if t.state.is_finished()]
    numbers = [int(r.data.tags["trial_number"]) for r in children]
    assert len(numbers) == len(set(numbers)), "one run per trial"
    assert set(numbers) == {t.number for t in finished if records.has_run(t)}
    assert all(records.has_run(t) for t in finished if records.uses_budget(t)), "every evaluated trial has a run"
    assert not [t for t in finished if records.has_run(t) and (records.is_duplicate(t) or
                                                               t.user_attrs.get(records.FAILURE_KIND) == "concurrent")]


def search_process(config: Path, task_dir: Path, *command: str, **popen: object) -> subprocess.Popen:
    """``slimsearch run CONFIG`` (or ``command``) in its own process, to be signalled or
    killed, importing the user_task fixture's my_task.py from ``task_dir``; output as text."""
    env = {**os.environ, "PYTHONPATH": str(task_dir)}
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen([sys.executable, "-m", "slimsearch.search.cli", *(command or ("run",)), str(config)],
                            env=env, **{**streams, **popen})


def count_trials(out: Path, study_name: str, keep: Callable[[optuna.trial.FrozenTrial], bool],
                 storage: str | None = None) -> int:
    """Trials of a study that may not exist yet (polled while a search starts in another process,
    through the same locked storage access as slimsearch itself)."""
    try:
        study = load_existing_study(storage or f"sqlite:///{out / 'optuna.db'}", study_name)
    except StudyMismatch:
        return 0
    return len([t for t in study.trials if keep(t)])


def processes_naming(folder: Path) -> list[psutil.Process]:
    """Processes other than this one whose command line names a path inside ``folder``."""
    inside = f"{folder}{os.sep}"
    return [process for process in psutil.process_iter(["cmdline"])
            if process.pid != os.getpid() and inside in " ".join(process.info["cmdline"] or ())]


def probes_of(pid: int) -> list[psutil.Process]:
    """Serving probe processes started by process ``pid``, running or waiting for a job."""
    return [process for process in psutil.process_iter(["cmdline"])
            if (process.info["cmdline"] or [])[-2:] == [PROBE_MODULE, str(pid)]]


def wait_until(condition: Callable[[], bool], timeout_s: float = 120.0, every_s: float = 0.5) -> None:
    """Poll ``condition`` until it holds; fail the test (not hang it) after ``timeout_s``. Each
    poll of a study opens its storage: polling faster takes CPU from the search under test."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached within {timeout_s:.0f} s"
        time.sleep(every_s)
