"""The Ray Tune backend on a local Ray instance: same study, same MLflow layout, constraints honoured."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from optuna.trial import TrialState

from slimsearch.search.objectives import Constraint
from tests.conftest import write_config
from tests.helpers import run_cli, stores

pytestmark = pytest.mark.e2e  # whole searches: deselect with -m 'not e2e' for a fast run


def test_ray_backend_completes_a_search_with_constraints_and_the_same_mlflow_layout(
        tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # Ray's worker processes import my_task from there
    fast_config["constraints"] = ["accuracy_drop <= 0.2", "latency_p50_ms <= 50"]
    fast_config["search"].update(backend="ray", workers=2, n_trials=4, study_name="tune", sampler="random",
                                 ray={"cpus_per_trial": 1})
    output = run_cli(write_config(tmp_path / "tune.yaml", **fast_config))
    study, _, children, parent = stores(Path(fast_config["output_dir"]), "tune")

    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or t.user_attrs.get("failure_kind") == "error"]
    assert len(counted) == 4, output
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert parent.info.status == "FINISHED" and parent.data.tags["backend"] == "ray"
    runs = {int(r.data.tags["trial_number"]): r for r in children}
    assert sorted(runs) == [t.number for t in study.trials], "one nested child run per trial"
    assert not [r for r in children if r.info.status == "RUNNING"]
    constraints = [Constraint.parse(text) for text in fast_config["constraints"]]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete, output
    for trial in complete:
        metrics = trial.user_attrs["metrics"]
        assert trial.values == [metrics[name] for name in ("accuracy", "latency_p50_ms", "memory_mb")]
        assert set(trial.constraints) == {c.name for c in constraints}, "constraints reach the Optuna study"
        feasible = all(c.violation(metrics) <= 0 for c in constraints)
        assert runs[trial.number].data.tags["feasible"] == str(feasible).lower()
        assert runs[trial.number].data.metrics["latency_p50_ms"] == pytest.approx(metrics["latency_p50_ms"], rel=5e-4)
    assert (Path(fast_config["output_dir"]) / "mlartifacts").exists()


def test_a_killed_ray_driver_s_trials_are_failed_and_re_run_when_the_study_resumes(
        tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess

    from tests.helpers import count_trials, search_process, wait_until

    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    fast_config["search"].update(backend="ray", workers=1, n_trials=3, study_name="ray-killed", sampler="random",
                                 ray={"cpus_per_trial": 1}, heartbeat_s=2)
    fast_config["evaluation"]["round_s"] = 0.15  # trials long enough to be killed inside
    config = write_config(tmp_path / "ray.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    process = search_process(config, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=False,
                              start_new_session=True)
    wait_until(lambda: count_trials(out, "ray-killed", lambda t: t.state == TrialState.RUNNING
                                    and "candidate" in t.user_attrs) >= 1, timeout_s=240)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, and Ray's processes in its session
    process.wait()
    killed = [t for t in stores(out, "ray-killed")[0].trials if t.state == TrialState.RUNNING]
    assert killed
    left = json.loads((out / "ray-session-ray-killed.json").read_text())

    fast_config["search"]["n_trials"] = 1
    run_cli(write_config(tmp_path / "resume.yaml", **fast_config))
    assert not Path(left["session_dir"]).exists(), "the killed run's Ray session folder is removed"
    assert not [pid for pid, created in left["processes"] if psutil.pid_exists(pid)
                and abs(psutil.Process(pid).create_time() - created) < 1], "and its processes"
    assert not (out / "ray-session-ray-killed.json").exists(), "the resume removed what it started itself"
    study, _, children, _ = stores(out, "ray-killed")
    for trial in killed:
        assert study.trials[trial.number].state == TrialState.FAIL
        assert study.trials[trial.number].user_attrs["failure_kind"] == "stale"
        assert [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number], "re-run"
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not [r for r in children if r.info.status == "RUNNING"]


def test_a_leftover_worker_no_longer_under_its_raylet_is_killed_before_its_folder_is_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from slimsearch.search.loop.ray_cluster import Leftovers

    session = tmp_path / "session_2026-11-30_22-02-59_449137_13656"
    (session / "logs").mkdir(parents=True)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    orphan = subprocess.Popen([*sleeper, f"--session-name={session.name}"], start_new_session=True)
    bystander = subprocess.Popen([*sleeper, "--session-name=session_of_another_run"], start_new_session=True)
    record = tmp_path / "ray-session-study.json"
    try:
        Leftovers(record, str(session), processes=[]).write()
        said = Leftovers.read(record).remove()
        assert not psutil.pid_exists(orphan.pid), "the worker naming the folder is killed (and reaped)"
        assert not session.exists() and not record.exists()
        assert "removed 1 Ray processes" in said
        assert bystander.poll() is None, "another run's processes are not touched"
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
