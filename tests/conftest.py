"""Shared fixtures: the README's own task example as a tiny, fast task, and config helpers."""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import torch
import yaml

from tests.helpers import processes_naming
from tests.postgres_server import PostgresServer, PostgresUnavailable, running_server

README = Path(__file__).resolve().parents[1] / "README.md"

torch.set_num_threads(2)


def readme_task_source() -> str:
    """The ``# my_task.py`` code block of the README, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(b for b in blocks if b.startswith("# my_task.py"))


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """A process a test started (its command line names the test's folder) and left running
    is killed after the test and reported as a warning naming the test: a leftover worker
    or probe goes on writing to stores nobody reads, and one printed storage warnings after
    a whole suite had passed (2026-11-29). slimsearch's own threads (heartbeats) the test
    started and left running are reported too (they cannot be killed): an in-process run
    that leaves one behind leaks it in every user's process that embeds slimsearch."""
    threads_before = set(threading.enumerate())
    yield
    leftovers = processes_naming(tmp_path)
    for process in leftovers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=10)
    if leftovers:
        commands = "; ".join(" ".join(process.info["cmdline"] or ())[-160:] for process in leftovers)
        warnings.warn(f"{request.node.nodeid} left {len(leftovers)} process(es) running, killed: {commands}")
    threads = [thread.name for thread in set(threading.enumerate()) - threads_before
               if thread.is_alive() and getattr(getattr(thread, "_target", None), "__module__", "").startswith("slimsearch")]
    if threads:
        warnings.warn(f"{request.node.nodeid} left {len(threads)} thread(s) running: {', '.join(sorted(threads))}")


@pytest.fixture()
def user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Writes the README example as ``my_task.py`` on sys.path; returns the task spec."""
    (tmp_path / "my_task.py").write_text(readme_task_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_task", None)
    return "my_task:make_task"


def write_config(path: Path, **sections: object) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


@pytest.fixture()
def fast_config(tmp_path: Path, user_task: str) -> dict:
    """A config small enough for an end-to-end search in seconds (README task, short budgets)."""
    return {
        "task": user_task,
        "output_dir": str(tmp_path / "out"),
        "space": {
            "prune": {"low": 0.0, "high": 0.5, "step": 0.25},
            "quantize": {"bits": [32, 8, 4]},
            "student": {"width": [0.5, 1.0], "depth": [1, 2], "temperature": [2.0], "alpha": [0.5]},
            "parallel": {"strategies": ["single", "data_parallel"], "degree": [2], "threads": [1], "runtimes": ["torch"]},
        },
        "constraints": ["accuracy_drop <= 0.2"],
        # Deployment variants (on by default) are off: each test's trial sequence is its own;
        # test_an_accurate_new_model_s_deployment_variants_are_measured_next turns them on.
        # Nor is the deployment calibration (test_calibration turns it on).
        "search": {"n_trials": 4, "study_name": "e2e", "front_every": 2, "seed": 1, "deployment_variants": 0,
                   "calibrate_deployments": False},
        "training": {"teacher_epochs": 3, "distill_epochs": 2, "finetune_epochs": 1},
        # Searches under test must not depend on the host's load (workers even train beside
        # each other's probes): no reading is too busy here; test_busy_host tests the rule.
        # The front is confirmed at a run's end only where a test asks (test_confirmed_front).
        # One timing round: searches under test assert records, not latencies, and each
        # round pairs with a 5-10 ms reference (this test took 36 -> 28 s with 3 -> 1 rounds:
        # test_search_records_agree_and_resume_continues_numbering).
        "evaluation": {"batch_size": 32, "warmup_s": 0.01, "round_s": 0.02, "rounds": 1, "timeout_s": 120,
                       "max_outside_load": 1.0,
                       "confirm_passes": 0},
    }


@pytest.fixture(scope="session")
def digits_teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage cache holding the digits teacher, trained once for the whole session (15
    epochs); tests that need the trained teacher build their pipelines on it."""
    from slimsearch.pipelines import CompressionPipeline, TrainingRecipe, load_task

    cache_dir = tmp_path_factory.mktemp("digits-teacher-cache")
    teacher = CompressionPipeline(load_task("digits", 0), cache_dir, TrainingRecipe(), seed=0).teacher  # trains it
    assert not teacher.cache_hit
    return cache_dir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback with databases ``optuna`` and ``mlflow``; skipped
    where PostgreSQL is not installed, unless CI requires it."""
    try:
        yield from running_server(("optuna", "mlflow"))
    except PostgresUnavailable as exc:
        if os.environ.get("SLIMSEARCH_REQUIRE_POSTGRES"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres(postgres_server: PostgresServer) -> str:
    """Base URL of the test PostgreSQL server (add a database name)."""
    return postgres_server.url
