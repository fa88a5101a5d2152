"""Overnight failure modes, injected on real stores: dead workers anywhere, their trials found and re-run."""

from __future__ import annotations

import dataclasses
import errno
import sqlite3
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from slimsearch.search.store import outages, records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.storage import HEARTBEAT_ATTR, Heartbeats, fail_stale_trials, open_storage, stale_trials
from tests.conftest import write_config
from slimsearch.search.cli import app
from tests.helpers import assert_one_run_per_decided_trial, cli_text, count_trials, processes_naming, probes_of, run_cli, runner, search_process, stores, wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def rdb_study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    """A fresh study on the storage wrapper Optuna really hands out for an RDB URL: a SQLite
    file, or the PostgreSQL server several hosts would share."""
    url = request.getfixturevalue("postgres") + "optuna" if request.param == "postgresql" else f"sqlite:///{tmp_path / 'o.db'}"
    return optuna.create_study(study_name=f"faults-{uuid.uuid4().hex[:8]}", storage=open_storage(url))


def _running(study: optuna.Study, **user_attrs: object) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_categorical("x", ["a", "b"])
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    return trial


def test_heartbeats_are_recorded_on_the_wrapped_rdb_storage(rdb_study: optuna.Study) -> None:
    study = rdb_study
    assert not isinstance(study._storage, optuna.storages.RDBStorage), "Optuna wraps it (_CachedStorage)"
    trial = _running(study)
    beats = Heartbeats(study, interval_s=1)
    with beats.beating(trial):
        wait_until(lambda: HEARTBEAT_ATTR in study.trials[0].system_attrs, timeout_s=10)  # the first beat
        first = study.trials[0].system_attrs[HEARTBEAT_ATTR]
        wait_until(lambda: study.trials[0].system_attrs[HEARTBEAT_ATTR] > first, timeout_s=10)  # it keeps beating
    beats.close()


def test_a_silent_trial_of_another_host_or_with_no_owner_is_failed_and_re_enqueued(rdb_study: optuna.Study) -> None:
    study = rdb_study
    foreign = _running(study, host="another-host", pid=1)
    study._storage.set_trial_system_attr(foreign._trial_id, HEARTBEAT_ATTR, time.time())
    ownerless = _running(study)  # killed between ask() and recording its owner
    alive = _running(study)
    heartbeats = Heartbeats(study, 1)
    heartbeats.add(alive)
    assert stale_trials(study, heartbeat_s=10) == [], "nothing is stale within the grace period"
    # Left beating, the thread outlived the test and retried the session's stopped PostgreSQL
    # server after the suite ("the Optuna storage unreachable ... retrying for up to 600 s").
    heartbeats.close()
    later = time.time() + 31
    study._storage.set_trial_system_attr(alive._trial_id, HEARTBEAT_ATTR, later)
    assert {t.number for t in stale_trials(study, 10, now=later)} == {foreign.number, ownerless.number}

    study._storage.set_trial_system_attr(foreign._trial_id, HEARTBEAT_ATTR, time.time() - 31)
    study._storage.set_trial_system_attr(ownerless._trial_id, HEARTBEAT_ATTR, time.time() - 31)
    assert sorted(fail_stale_trials(study, 10)) == [foreign.number, ownerless.number]
    trials = study.trials
    assert [trials[n].state for n in (foreign.number, ownerless.number)] == [TrialState.FAIL] * 2
    assert {trials[n].user_attrs["failure_kind"] for n in (foreign.number, ownerless.number)} == {"stale"}
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [foreign.number, ownerless.number]
    assert fail_stale_trials(study, 10) == [], "a failed trial is not failed twice"


@pytest.mark.e2e
def test_a_run_fails_a_dead_foreign_worker_s_trial_and_completes_its_budget(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=1, study_name="foreign", heartbeat_s=1, sampler="random")
    config = write_config(tmp_path / "foreign.yaml", **fast_config)
    run_cli(config)
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "foreign")
    orphan = study.ask({"student": CategoricalDistribution(["teacher", "distilled"])})
    orphan.set_user_attr("host", "a-host-that-died")
    study._storage.set_trial_system_attr(orphan._trial_id, HEARTBEAT_ATTR, time.time() - 60)

    run_cli(config)  # must not wait for the orphan: its worker is silent past the grace period
    study, _, children, _ = stores(out, "foreign")
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert study.trials[orphan.number].user_attrs["failure_kind"] == "stale"
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not [r for r in children if r.info.status == "RUNNING"]


BROKEN_TASKS = ["labels_out_of_range", "negative_labels", "float_labels", "splits_as_lists", "mismatched_lengths",
                "empty_validation", "teacher_not_a_module", "nan_pretrained_teacher", "nan_teacher_architecture",
                "teacher_with_wrong_inputs", "untraceable_teacher", "named_inputs_of_different_shapes", "no_teacher"]


@pytest.mark.parametrize("factory", BROKEN_TASKS)
def test_a_broken_task_exits_2_with_one_error_line_and_records_no_trial(tmp_path: Path, fast_config: dict,
                                                                         factory: str) -> None:
    fast_config.update(task=f"tests.tasks.broken:{factory}")
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "broken.yaml", **fast_config))])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    out = Path(fast_config["output_dir"])
    assert not (out / "mlflow.db").exists(), "no MLflow run was started"
    if (out / "optuna.db").exists():
        assert not stores_trials(out), "no trial was recorded"


def test_a_teacher_probe_that_times_out_is_said_to_time_out_not_blamed_on_tracing(tmp_path: Path,
                                                                                  fast_config: dict) -> None:
    """On a busy host the teacher's own probe can run past evaluation.timeout_s: the one line
    says so and what to do, instead of asking for a traceable model that traced fine."""
    fast_config["evaluation"]["timeout_s"] = 0.01
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "slow.yaml", **fast_config))])
    text = cli_text(result.output)
    assert result.exit_code == 2, text
    assert "teacher's serving measurement failed" in text and "timed out" in text and "timeout_s" in text
    assert "traceable" not in text


@pytest.mark.parametrize("factory", BROKEN_TASKS)
def test_validate_refuses_every_task_run_refuses(tmp_path: Path, fast_config: dict, factory: str) -> None:
    """validate runs run's teacher check (untrained, a few rows): it never says ok to a task run refuses."""
    fast_config.update(task=f"tests.tasks.broken:{factory}")
    result = runner.invoke(app, ["validate", str(write_config(tmp_path / "broken.yaml", **fast_config))])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not (Path(fast_config["output_dir"]) / "cache").exists(), "nothing was trained"


def test_an_output_dir_that_is_a_file_exits_2_before_training(tmp_path: Path, fast_config: dict) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    fast_config["output_dir"] = str(tmp_path / "taken")
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "c.yaml", **fast_config))])
    assert result.exit_code == 2 and "output_dir" in cli_text(result.output) and "not a writable folder" in cli_text(result.output)
    assert len(result.output.strip().splitlines()) == 1


def stores_trials(out: Path) -> list:
    return [t for s in optuna.study.get_all_study_summaries(f"sqlite:///{out / 'optuna.db'}") for t in range(s.n_trials)]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_cache_entry_is_deleted_and_rebuilt(tmp_path: Path, damage: str) -> None:
    import torch

    from slimsearch.pipelines.cache import StageCache

    cache = StageCache(tmp_path)
    key = cache.key("teacher-logits", teacher="t")
    cache.get_or_build(key, lambda: torch.arange(10_000.0))
    data = cache.path(key).read_bytes()
    cache.path(key).write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00junk" * 9}[damage])
    value, hit = cache.get_or_build(key, lambda: torch.arange(10_000.0))
    assert not hit and torch.equal(value, torch.arange(10_000.0))
    assert torch.equal(cache.get_or_build(key, lambda: torch.zeros(1))[0], torch.arange(10_000.0)), "rebuilt on disk"


@pytest.mark.e2e
@pytest.mark.parametrize("loss", ["emptied", "half-written", "switched-to-journal"])
def test_a_lost_or_replaced_optuna_storage_is_refused_and_mlflow_keeps_its_trials(
    tmp_path: Path, fast_config: dict, loss: str
) -> None:
    fast_config["search"].update(n_trials=2, study_name="kept", sampler="random")
    config = write_config(tmp_path / "kept.yaml", **fast_config)
    run_cli(config)
    out = Path(fast_config["output_dir"])
    _, _, children_before, _ = stores(out, "kept")
    database = out / "optuna.db"
    if loss == "emptied":
        database.write_bytes(b"")
    elif loss == "half-written":
        data = database.read_bytes()
        database.write_bytes(data[: len(data) // 2])
    else:
        fast_config["search"]["storage"] = f"journal:///{out / 'optuna.journal'}"
        config = write_config(tmp_path / "kept.yaml", **fast_config)
    result = runner.invoke(app, ["run", str(config)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert ("lost or replaced" if loss != "half-written" else "cannot be read") in cli_text(lines[-1])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("slimsearch").experiment_id])
    assert len([r for r in runs if r.data.tags.get("slimsearch.role") == "trial"]) == len(children_before)


@pytest.mark.e2e
def test_a_second_run_of_the_same_study_is_refused_while_the_first_runs(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=50, study_name="twice")
    fast_config["evaluation"]["round_s"] = 0.1
    config = write_config(tmp_path / "twice.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    first = search_process(config, tmp_path)
    try:
        wait_until(lambda: count_trials(out, "twice", lambda t: t.state.is_finished()) >= 1)
        second = runner.invoke(app, ["run", str(config)])
        assert second.exit_code == 2 and "already being run" in cli_text(second.output), second.output
        assert "slimsearch worker" in cli_text(second.output)
    finally:
        first.kill()
        first.communicate()
    # its serving probe (own session, holding the timing lock) goes by itself, not at its deadline
    wait_until(lambda: not processes_naming(tmp_path) and not probes_of(first.pid), timeout_s=15, every_s=0.2)



@pytest.mark.e2e
def test_two_runs_started_together_on_a_fresh_then_an_existing_study_run_once_and_lose_nothing(
        tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=2, study_name="together")
    config = write_config(tmp_path / "together.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    for rounds in (1, 2):  # a fresh output_dir, then the study the first round left
        both = [search_process(config, tmp_path) for _ in range(2)]
        outputs = [process.communicate(timeout=600)[0] for process in both]
        assert sorted(process.returncode for process in both) == [0, 2], outputs
        refused = next(text for process, text in zip(both, outputs) if process.returncode == 2)
        assert "already being run" in cli_text(refused) and "Traceback" not in refused, refused
        assert count_trials(out, "together", lambda t: t.state == TrialState.FAIL) == 0
        finished = count_trials(out, "together", lambda t: t.state.is_finished() and "duplicate_of" not in t.user_attrs)
        assert finished >= 2 * rounds, outputs
    assert not [p for p in out.rglob("*") if "artifacts-tmp" in p.parts and p.is_file()], "temp files left behind"


@pytest.mark.e2e
def test_a_full_disk_stops_the_run_with_one_line_and_the_resume_completes_the_budget(
        tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimsearch.search.loop import trial as trial_module
    from slimsearch.search.store.study import evaluated_count, load_existing_study

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "cache/students/x.pt")

    # the three anchors: the lost teacher's re-run is queued behind the other two
    fast_config["search"].update(n_trials=3, study_name="full")
    config = write_config(tmp_path / "full.yaml", **fast_config)
    storage = f"sqlite:///{Path(fast_config['output_dir']) / 'optuna.db'}"
    with monkeypatch.context() as patch:
        patch.setattr(trial_module, "measure_candidate", disk_full)  # the teacher's baseline is measured first
        stopped = runner.invoke(app, ["run", str(config)])
    text = cli_text(stopped.output)
    assert stopped.exit_code == 2 and "No space left on device" in text and "run the same command again" in text, text
    assert "Traceback" not in stopped.output
    study = load_existing_study(storage, "full")
    assert [t.user_attrs.get("failure_kind") for t in study.trials if t.state.is_finished()] == ["host"]
    assert evaluated_count(study) == 0
    resumed = runner.invoke(app, ["run", str(config)])
    assert resumed.exit_code == 0, resumed.output
    study = load_existing_study(storage, "full")
    lost = study.trials[0]
    assert evaluated_count(study) == 3
    assert [t.params for t in study.trials[1:] if t.state == TrialState.COMPLETE].count(lost.params) == 1, "re-run"

def test_reading_a_study_that_does_not_exist_creates_no_storage(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "nothing-here", "--storage", f"sqlite:///{tmp_path / 'none' / 'optuna.db'}"])
    assert result.exit_code == 2 and "no Optuna storage" in cli_text(result.output)
    assert not (tmp_path / "none").exists()


@pytest.mark.e2e
def test_runs_left_running_by_a_kill_after_tell_are_repaired_from_optuna_on_resume(tmp_path: Path,
                                                                                 fast_config: dict) -> None:
    from mlflow.tracking import MlflowClient

    fast_config["search"].update(n_trials=2, study_name="drift", sampler="random")
    config = write_config(tmp_path / "drift.yaml", **fast_config)
    run_cli(config)
    out = Path(fast_config["output_dir"])
    study, client, children, _ = stores(out, "drift")
    complete = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    run_id = complete.user_attrs["mlflow_run_id"]
    client.update_run(run_id, status="RUNNING")  # as a kill between study.tell and ending the run leaves it
    client.delete_tag(run_id, "feasible")

    output = run_cli(config, "--n-trials", "1")
    assert "repaired 1 MLflow run" in cli_text(output)
    run = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE" and "feasible" in run.data.tags


@pytest.mark.e2e
def test_a_storage_password_appears_nowhere_it_could_be_read(tmp_path: Path, fast_config: dict, postgres: str) -> None:
    """The throwaway server trusts loopback, so any password connects: it must not leak into
    the terminal, the run's logs, the owner-only worker config or MLflow."""
    import stat

    from mlflow.tracking import MlflowClient

    secret = "s3cret-Passw0rd"
    base = postgres.replace("slimsearch@", f"slimsearch:{secret}@")
    fast_config["search"].update(n_trials=2, study_name="secret", storage=base + "optuna", workers=2)
    fast_config["tracking"] = {"tracking_uri": base + "mlflow"}
    output = run_cli(write_config(tmp_path / "secret.yaml", **fast_config))
    assert secret not in output and "slimsearch:***@" in output
    logs = Path(fast_config["output_dir"]) / "logs"
    assert not [p.name for p in logs.iterdir() if secret in p.read_text(errors="replace")
                and not p.name.endswith("worker-config.yaml")]
    config_file = logs / "secret-worker-config.yaml"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600, "the worker config holds the URL: owner-only"
    client = MlflowClient(tracking_uri=base + "mlflow")
    for run in client.search_runs([client.get_experiment_by_name("slimsearch").experiment_id]):
        assert secret not in str(run.data.tags) + str(run.data.params)


def test_status_of_a_study_without_a_baseline_shows_what_it_has_and_names_a_dead_worker(tmp_path: Path,
                                                                                       fast_config: dict) -> None:
    """A run that died before measuring its teacher leaves a study with no baseline or budget."""
    from slimsearch.search.config import SlimsearchConfig
    from slimsearch.search.store.study import open_study

    config_path = write_config(tmp_path / "early.yaml", **fast_config)
    study = open_study(SlimsearchConfig.model_validate(fast_config))
    orphan = study.ask()
    orphan.set_user_attr("host", __import__("socket").gethostname())
    orphan.set_user_attr("pid", 2**22 + 17)  # no such process: its worker is gone
    result = runner.invoke(app, ["status", str(config_path)])
    text = cli_text(result.output)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "no teacher baseline" in text and "none yet" in text
    assert f"running #{orphan.number} worker ?, worker gone" in text


def test_a_select_killed_mid_export_leaves_the_previous_deployment_whole_and_is_never_repaired_as_a_trial(
        tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from mlflow.tracking import MlflowClient

    from slimsearch.search.deploy import deployment
    from slimsearch.search.store.tracking import ROLE_TAG

    fast_config["space"]["quantize"]["bits"] = [32]
    fast_config["search"].update(n_trials=2, study_name="atomic")
    config = write_config(tmp_path / "atomic.yaml", **fast_config)
    run_cli(config)
    out, deploy = Path(fast_config["output_dir"]), tmp_path / "deploy"
    first, second = [t for t in stores(out, "atomic")[0].trials if t.state == TrialState.COMPLETE][:2]
    shipped = runner.invoke(app, ["select", str(config), "--trial", str(first.number), "--no-register",
                                  "--output", str(deploy)])
    assert shipped.exit_code == 0, shipped.output
    before = {path.name: path.read_bytes() for path in deploy.iterdir()}

    real_export = deployment.export_model

    def killed_after_the_first_file(model, example, fmt, stem):  # what kill -9 mid-export leaves: a partial folder
        path = real_export(model, example, fmt, stem)
        if fmt == "onnx":
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(deployment, "export_model", killed_after_the_first_file)
    runner.invoke(app, ["select", str(config), "--trial", str(second.number), "--format", "torchscript",
                        "--format", "onnx", "--no-register", "--output", str(deploy)])
    assert {path.name: path.read_bytes() for path in deploy.iterdir()} == before, "trial A's deployment, whole"
    assert yaml.safe_load((deploy / "deployment.yaml").read_text())["trial"] == first.number
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deploy.")], "no staging folder is left"

    _, client, children, parent = stores(out, "atomic")
    client.create_run(parent.info.experiment_id, tags={  # a select killed after starting its MLflow run
        "mlflow.parentRunId": parent.info.run_id, ROLE_TAG: "deployment", "trial_number": str(second.number)})
    output = run_cli(config, "--n-trials", "1")
    assert "repaired" not in cli_text(output)
    runs = [r for r in MlflowClient(f"sqlite:///{out / 'mlflow.db'}").search_runs(
        [parent.info.experiment_id], filter_string=f"tags.trial_number = '{second.number}'")]
    assert sorted(r.data.tags.get(ROLE_TAG) for r in runs) == ["deployment", "trial"]
    assert [r.info.status for r in runs if r.data.tags.get(ROLE_TAG) == "deployment"] == ["RUNNING"]


@pytest.mark.parametrize(("section", "field", "url"), [
    ("search", "storage", "postgresql://slimsearch@127.0.0.1:1/optuna"),  # nothing listens on port 1
    ("tracking", "tracking_uri", "http://127.0.0.1:1"),
])
def test_an_unreachable_storage_or_tracking_server_is_one_line_before_anything_trains(
        tmp_path: Path, fast_config: dict, section: str, field: str, url: str) -> None:
    fast_config.setdefault(section, {})[field] = url
    started = time.monotonic()
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "down.yaml", **fast_config))])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and f"{section}.{field}" in lines[0], result.output
    assert "does not answer" in lines[0] and time.monotonic() - started < 30
    assert not (Path(fast_config["output_dir"]) / "cache").exists(), "nothing was trained"


def test_a_lost_mlflow_store_is_rebuilt_from_the_study_and_a_corrupt_one_is_one_line(tmp_path: Path,
                                                                                      fast_config: dict) -> None:
    def run(*extra: str) -> tuple[int, str]:  # each in its own process, as a user's runs are
        process = search_process(config, tmp_path, "run", *extra)
        output, _ = process.communicate(timeout=300)
        return process.returncode, output

    fast_config["search"].update(n_trials=1, study_name="lost")
    config = write_config(tmp_path / "lost.yaml", **fast_config)
    assert run()[0] == 0
    out = Path(fast_config["output_dir"])
    # Optuna only: an MLflow client in this process would keep the deleted file open.
    finished = count_trials(out, "lost", records.has_run)
    (out / "mlflow.db").unlink()

    code, output = run("--n-trials", "1")
    assert code == 0 and "rebuilt its parent and trial runs from the Optuna study" in cli_text(output), output
    study, _, children, parent = stores(out, "lost")
    assert_one_run_per_decided_trial(study, children)  # old and new
    assert parent.info.status == "FINISHED" and any(r.data.tags.get("pareto") == "true" for r in children)
    assert run("--n-trials", "1")[0] == 0, "a later resume finds the rebuilt runs (no crash re-tagging lost ones)"
    assert len(stores(out, "lost")[2]) == count_trials(out, "lost", records.has_run) > finished + 1

    (out / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # truncated by a full disk
    code, output = run("--n-trials", "1")
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "cannot be read" in lines[0], output


def _dropped_connection() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_transient_storage_errors_are_waited_out_once_announced_and_others_raised_at_once(monkeypatch) -> None:
    monkeypatch.setattr(outages, "FIRST_WAIT_S", 0.01)
    said: list[str] = []
    waiting = outages.Outages("the test server", patience_s=60, announce=said.append)
    failures = iter([_dropped_connection(), optuna.exceptions.StorageInternalError("commit failed")])

    def flaky() -> str:
        if (failure := next(failures, None)) is not None:
            if isinstance(failure, optuna.exceptions.StorageInternalError):
                raise failure from _dropped_connection()  # how Optuna's RDBStorage wraps it
            raise failure
        return "written"

    assert waiting.call(flaky) == "written"
    assert [line.split(" (")[0] for line in said] == ["the test server unreachable", "the test server reachable again after 0 s"]
    assert waiting.reconnected_at > 0, "silence before this moment is not held against other workers"
    missing_table = sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: trials"))
    with pytest.raises(sqlalchemy.exc.OperationalError):  # a broken SQLite file does not heal by waiting
        waiting.call(lambda: (_ for _ in ()).throw(missing_table))

    impatient = outages.Outages("the test server", patience_s=0.05, announce=said.append)
    with pytest.raises(outages.StorageOutage, match="the test server unreachable for 0 s .*search.storage_patience_s"):
        impatient.call(lambda: (_ for _ in ()).throw(_dropped_connection()))


def test_the_heartbeat_thread_outlives_a_failed_write(rdb_study: optuna.Study, monkeypatch) -> None:
    trial = _running(rdb_study)
    heartbeats = Heartbeats(rdb_study, interval_s=1)
    heartbeats.add(trial)
    record, failed = heartbeats._record, []

    def first_write_fails(trial_id: int) -> None:
        if not failed:
            failed.append(trial_id)
            raise outages.StorageOutage("the Optuna storage unreachable for 601 s")
        record(trial_id)

    monkeypatch.setattr(heartbeats, "_record", first_write_fails)
    assert HEARTBEAT_ATTR not in rdb_study._storage.get_trial(trial._trial_id).system_attrs, "first beat: the thread's"
    wait_until(lambda: HEARTBEAT_ATTR in rdb_study._storage.get_trial(trial._trial_id).system_attrs,
               timeout_s=10)
    assert failed and heartbeats.thread.is_alive()
    heartbeats.close()


@pytest.mark.e2e
def test_a_postgresql_restart_of_15_s_with_two_workers_is_waited_out_and_every_trial_accounted_for(
        tmp_path: Path, fast_config: dict, postgres_server) -> None:
    storage, tracking_uri = postgres_server.url + "optuna", postgres_server.url + "mlflow"
    fast_config["search"].update(n_trials=6, study_name=f"outage-{uuid.uuid4().hex[:6]}", heartbeat_s=2,
                                 storage=storage)
    fast_config["tracking"] = {"tracking_uri": tracking_uri}
    config = write_config(tmp_path / "outage.yaml", **fast_config)
    out, name = Path(fast_config["output_dir"]), fast_config["search"]["study_name"]
    process = search_process(config, tmp_path, "run", "--workers", "2")
    wait_until(lambda: count_trials(out, name, lambda t: t.user_attrs.get("worker") == 1, storage) >= 1  # both busy
               and count_trials(out, name, lambda t: t.state == TrialState.COMPLETE, storage) >= 2, timeout_s=240)
    postgres_server.pause()
    time.sleep(15)  # the outage itself: longer than the workers' 3 heartbeats (6 s) of silence
    postgres_server.resume()
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 0, output
    assert "the Optuna storage unreachable" in output and "the Optuna storage reachable again after" in output
    study, _, children, parent = stores(out, name, storage, tracking_uri)
    evaluated = [t for t in study.trials if "duplicate_of" not in t.user_attrs
                 and (t.state == TrialState.COMPLETE or t.user_attrs.get("failure_kind") == "error")]
    assert len(evaluated) == 6 and not [t for t in study.trials if t.state == TrialState.RUNNING], output
    log = (out / "logs" / f"{name}-worker-1.log").read_text()
    assert "worker done" in log and "reachable again" in log, f"the worker waited the outage out too: {log}"
    assert {t.user_attrs.get("worker") for t in study.trials if t.state.is_finished()} == {0, 1}, \
        f"both workers ran trials: {output} {log}"
    assert not [t for t in study.trials if t.user_attrs.get("failure_kind") == "stale"], \
        "silence while the server was away is no dead worker"
    assert_one_run_per_decided_trial(study, children)
    assert not [r for r in children if r.info.status == "RUNNING"] and parent.info.status == "FINISHED"


def test_a_candidate_another_worker_is_measuring_is_stepped_aside_for_by_the_later_trial(tmp_path: Path) -> None:
    from rich.console import Console

    from slimsearch.search.config import SlimsearchConfig
    from slimsearch.search.loop.predictor import CostPredictor
    from slimsearch.search.loop.proposals import ProposalGuard
    from slimsearch.spaces import suggest_candidate

    config = SlimsearchConfig(output_dir=str(tmp_path))
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"),
                                directions=list(config.objectives.values()))
    first, second = study.ask(), study.ask()
    candidate = suggest_candidate(first, config.space)
    other = dataclasses.replace(candidate, prune_ratio=0.5 if candidate.prune_ratio != 0.5 else 0.25)
    first.set_user_attr("candidate", candidate.to_dict())
    second.set_user_attr("candidate", candidate.to_dict())
    ledger = StudyLedger(study)
    guard = ProposalGuard(config, study, ledger, None, None, CostPredictor(lambda _: (1.0, 1.0)), Console())  # type: ignore[arg-type]

    def measuring(candidate, number: int) -> int | None:  # noqa: ANN001 - a Candidate
        ledger.catch_up()  # as the driver does before asking
        return guard._measuring_now(candidate, number)

    assert measuring(candidate, second.number) == first.number, "the later trial steps aside"
    assert measuring(candidate, first.number) is None, "the earlier one goes on: never both"
    assert measuring(other, second.number) is None
    study.tell(first, state=TrialState.FAIL)
    assert measuring(candidate, second.number) is None, "only a trial still being measured counts"


class _Runs:
    """Stands in for the MLflow tracker: the driver's records are what is tested."""

    def __init__(self) -> None:
        self.finished: dict[str, str] = {}

    def finish_trial(self, run_id: str, params: dict, metrics: dict, tags: dict, status: str) -> None:
        self.finished[run_id] = status


def test_a_lost_ray_worker_is_a_host_fault_re_run_once_and_never_the_candidate_s_error(tmp_path: Path) -> None:
    from slimsearch.search.config import SlimsearchConfig
    from slimsearch.search.loop.driver import SearchDriver
    from slimsearch.search.loop.predictor import CostPredictor
    from slimsearch.search.loop.recording import RunSummary, TrialRecorder
    from slimsearch.search.loop.ray_backend import StudySearcher
    from slimsearch.search.objectives import QualityMetric
    from slimsearch.search.store.study import evaluated_count
    from slimsearch.spaces import suggest_candidate

    config = SlimsearchConfig(output_dir=str(tmp_path))
    driver = SearchDriver(config)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"),
                                directions=list(config.objectives.values()))
    tracker, driver.heartbeats = _Runs(), Heartbeats(study, 10)
    recorder = TrialRecorder(study, tracker, config, QualityMetric("accuracy", "maximize"), CostPredictor(lambda _: (1.0, 1.0)),
                             tmp_path / "front-models", driver.console)
    driver.session = SimpleNamespace(study=study, recorder=recorder)  # what the searcher reaches
    searcher = StudySearcher.__new__(StudySearcher)  # the searcher's Tune-facing state, without a Tune experiment
    searcher.driver, searcher.summary, searcher._completed_trials = driver, RunSummary("s"), set()

    def lose_worker_of(trial: optuna.Trial, tune_id: str) -> None:
        searcher._ot_trials, searcher.started = {tune_id: trial}, {tune_id: (tune_id, suggest_candidate(trial, config.space))}
        searcher.on_trial_complete(tune_id, None, error=True)  # what Tune reports when the actor died

    first = study.ask()
    lose_worker_of(first, "run-1")
    rerun = study.get_trials(states=(TrialState.WAITING,))
    assert study.trials[first.number].user_attrs["failure_kind"] == "stale" and tracker.finished["run-1"] == "KILLED"
    assert len(rerun) == 1 and rerun[0].params == first.params and evaluated_count(study) == 0, "budget not spent"
    again = study.ask()
    lose_worker_of(again, "run-2")
    assert not study.get_trials(states=(TrialState.WAITING,)), "a candidate that kills every worker: re-run once"
    assert evaluated_count(study) == 0
