"""Several workers on one study, and a worker killed mid-trial (real processes, real stores)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import write_config
from slimsearch.search.cli import app
from slimsearch.search.store import records
from slimsearch.search.store.outages import Outages
from slimsearch.search.store.tracking import MlflowTracker
from tests.helpers import assert_one_run_per_decided_trial, cli_text, count_trials, run_cli, runner, search_process, stores, wait_until

pytestmark = pytest.mark.e2e  # whole searches: deselect with -m 'not e2e' for a fast run


def _evaluated(study) -> list:
    """Trials that used budget (answers to repeated proposals do not)."""
    return [t for t in study.trials if "duplicate_of" not in t.user_attrs
            and (t.state == TrialState.COMPLETE or t.user_attrs.get("failure_kind") == "error")]


def _storage_url(kind: str, out: Path) -> str | None:
    """The Optuna storage URL of a storage kind; None = the SQLite default."""
    return f"journal:///{out / 'optuna-journal.log'}" if kind == "journal" else None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])  # PostgreSQL: the restart test in test_faults.py
def test_two_local_workers_share_the_budget_exactly(kind: str, tmp_path: Path, fast_config: dict,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = Path(fast_config["output_dir"])
    storage = _storage_url(kind, out)
    fast_config["search"].update(n_trials=6, study_name="pair", heartbeat_s=2, storage=storage)
    config = write_config(tmp_path / "pair.yaml", **fast_config)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # worker processes import my_task from there
    output = run_cli(config, "--workers", "2")
    assert "Error" not in output and "error" not in output, output
    study, client, children, parent = stores(out, "pair", storage)
    assert len(_evaluated(study)) == 6, output
    assert {t.user_attrs["worker"] for t in _evaluated(study)} == {0, 1}, "both workers ran trials"
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert_one_run_per_decided_trial(study, children)
    assert parent.info.status == "FINISHED"
    log = Path(fast_config["output_dir"]) / "logs" / "pair-worker-1.log"
    assert "worker done" in log.read_text()
    status = runner.invoke(app, ["status", str(config)])
    assert status.exit_code == 0 and "6 of 6 evaluated" in cli_text(status.output), status.output


@pytest.mark.parametrize("kind", ["sqlite", "journal"])  # found by heartbeat / by its dead process id
def test_a_killed_worker_s_trial_is_failed_closed_in_mlflow_and_re_run(kind: str, tmp_path: Path, fast_config: dict) -> None:
    storage = _storage_url(kind, Path(fast_config["output_dir"]))
    fast_config["search"].update(n_trials=3, study_name="killed", heartbeat_s=1, sampler="random", storage=storage)
    fast_config["evaluation"]["round_s"] = 0.15  # trials long enough to be killed inside
    config = write_config(tmp_path / "killed.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    process = search_process(config, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=False,
                              start_new_session=True)  # a session: the kill reaches the probe too
    # killed inside a trial: its MLflow run is open (a worker killed between the proposal and
    # opening the run leaves no run to close; the trial is failed and re-run all the same)
    wait_until(lambda: count_trials(out, "killed", lambda t: t.state == TrialState.RUNNING
                                    and records.MLFLOW_RUN_ID in t.user_attrs and t.number > 0, storage) >= 1,
               timeout_s=180)
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its probe: no chance to clean up
    process.wait()
    study, _, _, _ = stores(out, "killed", storage)
    killed = next(t for t in study.trials if t.state == TrialState.RUNNING)
    done_before = len(_evaluated(study))

    fast_config["search"]["n_trials"] = 1
    run_cli(write_config(tmp_path / "resume.yaml", **fast_config))
    study, client, children, _ = stores(out, "killed", storage)
    assert study.trials[killed.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params, "the killed parameters ran again"
    assert len(_evaluated(study)) == done_before + 1
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    runs = {int(r.data.tags["trial_number"]): r for r in children}
    assert runs[killed.number].info.status == "KILLED" and runs[killed.number].data.tags["failure_kind"] == "stale"
    assert not [r for r in children if r.info.status == "RUNNING"]


def test_timeout_with_workers_ends_the_run_and_every_worker_within_a_trial(tmp_path: Path,
                                                                            fast_config: dict) -> None:
    import threading
    import time

    fast_config["search"].update(n_trials=200, study_name="timed", heartbeat_s=2)
    config = write_config(tmp_path / "timed.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    process = search_process(config, tmp_path, "run", "--workers", "2", "--timeout", "15", start_new_session=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in process.stdout))
    reader.start()  # timestamps each line as it comes: when did the timeout fire?
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", str(out / "logs" / "timed-worker-config.yaml")])
        pytest.fail("the run did not end after its timeout")
    ended_at = time.monotonic()
    reader.join()
    output = "".join(line for _, line in lines)
    timed_out_at = next((at for at, line in lines if "timeout of 15s reached" in line), None)
    assert process.returncode == 0 and timed_out_at is not None, output
    assert ended_at - timed_out_at < 60, "the workers finished their running trials, not the budget"
    alive = subprocess.run(["pgrep", "-f", str(out / "logs" / "timed-worker-config.yaml")], capture_output=True,
                           text=True).stdout.split()
    assert not alive, "no worker outlives the run"
    study, _, children, parent = stores(out, "timed")
    assert len(_evaluated(study)) < 200
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not [r for r in children if r.info.status == "RUNNING"] and parent.info.status == "FINISHED"


def test_a_front_tag_another_process_wrote_before_the_trial_s_run_ended_is_kept(tmp_path: Path) -> None:
    """With workers a trial is on the front once Optuna is told its values, before its own
    process ends its MLflow run: the owner's publisher may tag the run first."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tags", tmp_path / "artifacts", "tags", {},
                            Outages("the MLflow tracking store", 1.0, print))
    run_id = tracker.start_trial(0)
    assert tracker.client.get_run(run_id).data.tags["pareto"] == "false", \
        "the tag exists from the start: a publisher's write is an update, never a second insert racing the first"
    study = optuna.create_study(directions=["maximize"])
    trial = study.ask()
    study.tell(trial, [0.9])
    tracker.set_pareto_tags({run_id: "true"})  # the owner's publisher, between the tell and the run's end
    tracker.finish_trial(run_id, *records.TrialRecord(study.trials[0]).mlflow())
    assert tracker.client.get_run(run_id).data.tags["pareto"] == "true", "the trial's own record must not reset it"
