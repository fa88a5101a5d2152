"""End-to-end searches with real Optuna (SQLite) and real MLflow (SQLite), no mocks."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from slimsearch.search.cli import app
from slimsearch.search.objectives import latency_reference_key
from slimsearch.search.store.confirmation import CONFIRMED_ATTR, stored_confirmation
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import NEAR_FRONT, noise_aware_front
from slimsearch.search.store.tracking import MlflowTracker
from slimsearch.spaces import trained_model_params
from tests.conftest import readme_task_source, write_config
from tests.helpers import cli_text, count_trials, run_cli, runner, search_process, stores, wait_until

pytestmark = pytest.mark.e2e  # whole searches: deselect with -m 'not e2e' for a fast run


def test_search_records_agree_and_resume_continues_numbering(tmp_path: Path, fast_config: dict) -> None:
    config = write_config(tmp_path / "search.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    output = run_cli(config)
    assert "Pareto front" in cli_text(output) and "Review in MLflow: slimsearch ui" in cli_text(output)

    study, client, children, parent = stores(out, "e2e")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len([t for t in finished if t.user_attrs.get("failure_kind") != "rejected"]) == 4
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert sorted(by_number) == [t.number for t in finished], "exactly one child run per finished trial"
    objectives = list(study.user_attrs["objectives"])
    for trial in finished:
        run = by_number[trial.number]
        assert run.info.status == ("FINISHED" if trial.state == TrialState.COMPLETE else "FAILED")
        if trial.state == TrialState.COMPLETE:
            assert [run.data.metrics[name] for name in objectives] == pytest.approx(trial.values, rel=5e-4)  # 4 digits
            assert all(v == float(f"{v:.4g}") for v in run.data.metrics.values()), "the columns show 4 digits"
            assert run.data.params["quantize.bits"] == str(trial.user_attrs["candidate"]["bits"])
            assert run.data.tags["simulated"] == str(trial.user_attrs["simulated"]).lower()
    assert study.trials[0].user_attrs["summary"].startswith("teacher | prune 0 | fp32 | single"), "teacher enqueued"
    calibrated = study.user_attrs["baseline"]["metrics"]
    assert {latency_reference_key(threads) for threads in fast_config["space"]["parallel"]["threads"]} <= set(calibrated)

    front_numbers = {t.number for t in study.best_trials}
    members, within = noise_aware_front(study)
    tags = {n: r.data.tags.get("pareto") for n, r in by_number.items()}
    assert {n for n, tag in tags.items() if tag == "true"} == {t.number for t in members} and members
    assert {n for n, tag in tags.items() if tag == NEAR_FRONT} == set(within) <= front_numbers

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/front.csv", "pareto/front.json", "pareto/front.html"} <= artifacts
    front_json = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto/front.json", str(tmp_path))).read_text())
    assert {row["number"] for row in front_json["front"]} == front_numbers
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert len(history) == 4, "one hypervolume point per evaluated trial"
    values = [h.value for h in history]
    assert values == sorted(values), "hypervolume never decreases as trials are added"
    assert [h.step for h in history] == sorted({h.step for h in history})
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sampler"] == "tpe" and parent.data.tags["hardware.cpu"]
    assert len(parent.data.tags["space_fingerprint"]) == 12
    with_models = {n for n, r in by_number.items() if client.list_artifacts(r.info.run_id, "model")}
    assert with_models == front_numbers, "front members' models are logged, others are not"

    last = max(t.number for t in study.trials)
    written: dict[str, str] = {}
    write_tags = MlflowTracker.set_pareto_tags
    with pytest.MonkeyPatch.context() as patch:  # which pareto tags the resume writes
        patch.setattr(MlflowTracker, "set_pareto_tags", lambda self, tags: written.update(tags) or write_tags(self, tags))
        run_cli(config, "--n-trials", "2")
    study, _, children, parent = stores(out, "e2e")
    new_numbers = sorted(t.number for t in study.trials if t.number > last)
    assert new_numbers and new_numbers[0] == last + 1
    assert len([t for t in study.trials if t.user_attrs.get("failure_kind") != "rejected"]) == 6
    assert not [r for r in children if r.info.status == "RUNNING"]
    after = {int(r.data.tags["trial_number"]): r.data.tags.get("pareto") for r in children}
    changed = {n for n, tag in after.items() if n in tags and tag != tags[n]}
    new_on_front = {n for n in new_numbers if after[n] != "false"}
    assert set(written) == {by_number[n].info.run_id for n in changed} | {
        r.info.run_id for r in children if int(r.data.tags["trial_number"]) in new_on_front}, \
        "the resume writes the tags of runs whose membership changed, no others"

    front = runner.invoke(app, ["front", str(config)])
    assert front.exit_code == 0 and "Pareto front" in cli_text(front.output)

    # Every read command finds the study the same way: by a study name and --storage, from anywhere.
    storage = f"sqlite:///{out / 'optuna.db'}"
    expected = {"status": "study e2e", "front": "Pareto front", "report": "report-e2e.html",
                "select": "no completed trial satisfies", "ui": "no study named 'e2f'"}
    for command, found in expected.items():
        limits = ["--max-latency-ms", "1e-9", "--no-register"] if command == "select" else []
        result = runner.invoke(app, [command, "e2f" if command == "ui" else "e2e", "--storage", storage, *limits])
        assert found in cli_text(result.output), (command, result.output)
        assert result.exit_code == (0 if command in ("status", "front", "report") else 2), (command, result.output)


CRASHY_TASK = readme_task_source() + '''

def make_crashy_task(seed: int) -> Task:
    base = make_task(seed)

    def student(width: float, depth: int) -> nn.Module:
        if depth == 2:
            raise RuntimeError("depth-2 students are broken on purpose")
        return MLP(width, depth)

    return Task(name="crashy", train=base.train, val=base.val, test=base.test,
                teacher_architecture=MLP, student_architecture=student, fingerprint="crashy")
'''


def test_crashing_and_rejected_trials_are_recorded_and_the_study_continues(
    tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crashy_task.py").write_text(CRASHY_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    fast_config.update(task="crashy_task:make_crashy_task")
    fast_config["space"]["student"].update(keep_teacher=False, depth=[1, 2])
    fast_config["space"]["parallel"] = {"strategies": ["single", "tensor_parallel"], "degree": [2], "threads": [1]}
    fast_config["search"].update(n_trials=6, study_name="crashy", sampler="random", seed=3)
    config = write_config(tmp_path / "crashy.yaml", **fast_config)
    output = run_cli(config)
    assert "failed" in cli_text(output)

    study, client, children, _ = stores(Path(fast_config["output_dir"]), "crashy")
    kinds = {t.number: t.user_attrs.get("failure_kind") for t in study.trials}
    assert "error" in kinds.values() and "rejected" in kinds.values() and None in kinds.values()
    assert len([k for k in kinds.values() if k != "rejected"]) == 6, "rejections do not use up the budget"
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        if trial.state == TrialState.FAIL:
            assert run.info.status == "FAILED"
            assert run.data.tags["failure_reason"] == trial.user_attrs["failure_reason"]
        if trial.user_attrs.get("failure_kind") == "error":
            assert "depth-2 students are broken on purpose" in trial.user_attrs["failure_reason"]
            assert client.list_artifacts(run.info.run_id, "failure")
        if trial.user_attrs.get("failure_kind") == "rejected":
            assert "tensor_parallel" in trial.user_attrs["failure_reason"]


def test_a_task_that_fails_to_import_exits_2_with_one_line(tmp_path: Path, fast_config: dict) -> None:
    fast_config.update(task="no_such_module_here:make_task")
    config = write_config(tmp_path / "bad.yaml", **fast_config)
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: task 'no_such_module_here:make_task'")
    assert len(result.output.strip().splitlines()) == 1
    assert not Path(fast_config["output_dir"]).exists(), "nothing is recorded for a task that cannot load"


def test_torch_compile_without_a_cpp_compiler_exits_2_before_recording(
    tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler++")
    fast_config["space"]["parallel"]["runtimes"] = ["torch", "torch_compile"]
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "compile.yaml", **fast_config))])
    assert result.exit_code == 2
    assert "needs a C++ compiler ('no-such-compiler++' is not on PATH" in cli_text(result.output)
    assert "remove torch_compile from space.parallel.runtimes" in cli_text(result.output)
    assert len(result.output.strip().splitlines()) == 1
    assert not Path(fast_config["output_dir"]).exists()


def test_a_torch_compile_trial_is_measured_compiled_and_selected_as_its_program(
    tmp_path: Path, fast_config: dict
) -> None:
    import mlflow
    import numpy as np
    import torch
    import yaml

    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32]},
                            "student": {"distill": False}, "parallel": {"strategies": ["single"], "threads": [1],
                                                                        "runtimes": ["torch_compile"]}}
    fast_config["search"].update(n_trials=1, study_name="compiled")
    run_cli(write_config(tmp_path / "compiled.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    study, _, children, _ = stores(out, "compiled")
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.params == {"student": "teacher", "quantize.bits": 32,
                                                                  "parallel.strategy": "single", "parallel.threads": 1}
    assert trial.user_attrs["summary"].endswith("| torch_compile")
    metrics = children[0].data.metrics
    assert metrics["serving_first_call_s"] > 10 * metrics["latency_p50_ms"] / 1000, "compiled before serving"
    assert metrics["parallel_output_error"] < 1e-4

    deploy_dir = tmp_path / "deploy"
    result = runner.invoke(app, ["select", "compiled", "--storage", f"sqlite:///{out / 'optuna.db'}",
                                 "--max-accuracy-drop", "0.2", "--output", str(deploy_dir)])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((deploy_dir / "deployment.yaml").read_text())
    assert spec["artifacts"]["torch_export"].endswith(".pt2")
    rows = torch.randn(5, 20)
    program = torch.export.load(str(deploy_dir / spec["artifacts"]["torch_export"])).module()
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/slimsearch-compiled@champion").predict(rows.numpy())
    assert np.allclose(served, program(rows).detach().numpy(), atol=1e-5), "the registered model runs the program"


def test_resuming_with_other_objectives_is_refused(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"]["n_trials"] = 1
    config = write_config(tmp_path / "a.yaml", **fast_config)
    run_cli(config)
    fast_config["objectives"] = {"accuracy": "maximize", "model_mb": "minimize"}
    changed = write_config(tmp_path / "b.yaml", **fast_config)
    result = runner.invoke(app, ["run", str(changed)])
    assert result.exit_code == 2 and "use a new search.study_name" in cli_text(result.output)


def test_sigint_stops_cleanly_and_the_study_resumes(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=50, study_name="interrupted")
    fast_config["evaluation"]["round_s"] = 0.1
    config = write_config(tmp_path / "sigint.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    process = search_process(config, tmp_path)
    wait_until(lambda: count_trials(out, "interrupted", lambda t: t.state.is_finished()) >= 2
               and count_trials(out, "interrupted", _measuring) == 1)  # inside a later trial
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "a running trial finishes first" in cli_text(output) and "run the same command again to resume" in cli_text(output)

    study, client, children, parent = stores(out, "interrupted")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not [t for t in study.trials if t.state == TrialState.FAIL], "a stop request lets the running trial finish"
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert parent.info.status == "KILLED"
    assert {"pareto/front.csv", "pareto/front.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    last = max(t.number for t in study.trials)

    fast_config["search"]["n_trials"] = 1
    run_cli(write_config(tmp_path / "resume.yaml", **fast_config))
    study, _, _, parent = stores(out, "interrupted")
    assert min(t.number for t in study.trials if t.number > last) == last + 1
    assert parent.info.status == "FINISHED"


def _assert_the_front_was_confirmed(out: Path, output: str, tmp_path: Path) -> None:
    """The run ended by re-measuring its front together, and shows, tags and logs that front."""
    assert "front confirmed:" in output and "latencies re-measured together at" in output, output
    study, client, children, parent = stores(out, "pick")
    facts, confirmed = stored_confirmation(study)
    assert facts["passes"] == 2 and {t.number for t in StudyLedger.for_reading(study).front_trials()} <= set(confirmed)
    assert facts["teacher"] == 0 and 0 in confirmed, "the teacher (trial 0) is timed in the same sitting"
    assert all(r["clean"] and r["passes"] == 2 and r["latency_p50_ms"] > 0 for r in confirmed.values()), confirmed
    runs = {int(r.data.tags["trial_number"]): r for r in children}
    for number, record in confirmed.items():
        assert runs[number].data.metrics["confirmed_latency_p50_ms"] == pytest.approx(record["latency_p50_ms"], rel=5e-4)
        assert runs[number].data.tags["latency_confirmed"] == "yes"
    members, _ = noise_aware_front(study)
    assert {n for n, r in runs.items() if r.data.tags.get("pareto") == "true"} == {t.number for t in members}
    assert all(t.values[1] == confirmed[t.number]["latency_p50_ms"] for t in members), "the front shows the re-measurement"
    front_csv = Path(client.download_artifacts(parent.info.run_id, "pareto/front.csv", str(tmp_path))).read_text()
    assert front_csv.splitlines()[0].endswith("latency_confirmed")
    assert all(line.endswith(",yes") for line in front_csv.splitlines()[1:])


def test_select_exports_registers_and_refuses_impossible_limits_from_the_confirmed_front(tmp_path: Path, fast_config: dict) -> None:
    import mlflow
    import numpy as np
    import torch
    import yaml

    fast_config["search"].update(n_trials=3, study_name="pick")
    fast_config["evaluation"]["confirm_passes"] = 2
    output = cli_text(run_cli(write_config(tmp_path / "pick.yaml", **fast_config)))
    out = Path(fast_config["output_dir"])
    storage = f"sqlite:///{out / 'optuna.db'}"
    _assert_the_front_was_confirmed(out, output, tmp_path)

    impossible = runner.invoke(app, ["select", "pick", "--storage", storage, "--max-latency-ms", "0.00001"])
    assert impossible.exit_code == 2
    assert "no completed trial satisfies these limits; closest: trial" in cli_text(impossible.output)

    stores(out, "pick")[0].set_user_attr(CONFIRMED_ATTR, None)  # as if the run had been stopped before its end
    deploy_dir = tmp_path / "deploy"
    result = runner.invoke(app, ["select", "pick", "--storage", storage, "--max-accuracy-drop", "0.2",
                                 "--prefer", "latency", "--output", str(deploy_dir), "--alias", "champion"])
    assert result.exit_code == 0, result.output
    assert "front confirmed:" in cli_text(result.output), "a front left unconfirmed is confirmed before choosing"
    assert stored_confirmation(stores(out, "pick")[0])[1]
    assert "registered: models:/slimsearch-pick@champion (version 1" in cli_text(result.output)
    spec = yaml.safe_load((deploy_dir / "deployment.yaml").read_text())
    assert not (deploy_dir / ".probe").exists(), "nothing but the deployment is left in its folder"
    assert spec["measured"]["source"].startswith("re-measured")
    assert spec["measured"]["accuracy_drop"] <= 0.2
    assert spec["measured"]["latency_ms"]["p50_ci95"][0] <= spec["measured"]["latency_ms"]["p50"]
    assert {"torch", "optuna", "mlflow"} <= set(spec["versions"]) and spec["hardware"]["measured_on"]["cpu"]

    exported = torch.jit.load(str(deploy_dir / spec["artifacts"]["torchscript"]))
    rows = torch.randn(7, 20)
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/slimsearch-pick@champion").predict(rows.numpy())
    assert np.allclose(served, exported(rows).detach().numpy(), atol=1e-6)
    version = MlflowClient().get_model_version_by_alias("slimsearch-pick", "champion")
    signature = mlflow.models.get_model_info("models:/slimsearch-pick@champion").signature
    assert [(spec.shape, str(spec.type)) for spec in signature.inputs.inputs] == [((-1, 20), "float32")]
    assert [spec.shape for spec in signature.outputs.inputs] == [(-1, 3)], "inferred from real rows and outputs"
    assert float(version.tags["accuracy"]) == pytest.approx(spec["measured"]["accuracy"], rel=1e-5)

    # The config alone finds the study (its own output_dir, no --storage), like run does.
    config = tmp_path / "pick.yaml"
    report = runner.invoke(app, ["report", str(config)])
    assert report.exit_code == 0 and (out / "report-pick.html").exists(), report.output
    int8 = next(t for t in stores(out, "pick")[0].trials if t.user_attrs.get("candidate", {}).get("bits") == 8)
    refused = runner.invoke(app, ["select", str(config), "--trial", str(int8.number), "--format", "onnx",
                                  "--no-register"])
    assert refused.exit_code == 2 and "exports as torchscript only" in cli_text(refused.output)
    picked = runner.invoke(app, ["select", str(config), "--trial", str(int8.number), "--no-register",
                                 "--output", str(tmp_path / "by-number")])
    assert picked.exit_code == 0 and f"chosen: trial {int8.number}" in cli_text(picked.output), picked.output


def test_a_second_sigint_aborts_the_running_trial_and_marks_it(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=50, study_name="aborted")
    fast_config["space"]["student"]["keep_teacher"] = False  # every trial distils a student ...
    fast_config["training"]["distill_epochs"] = 100000  # ... for hours; the teacher's baseline stays quick
    config = write_config(tmp_path / "abort.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    log = tmp_path / "abort.log"
    with open(log, "w") as stdout:
        process = search_process(config, tmp_path, stdout=stdout)
        try:
            wait_until(lambda: count_trials(out, "aborted", _measuring) == 1)
            process.send_signal(signal.SIGINT)
            wait_until(lambda: "a running trial finishes first" in " ".join(log.read_text().split()))  # heard
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:  # a search left running would hold the host's timing lock for the tests after this one
            process.kill()
            process.wait()
    output = log.read_text()
    assert process.returncode == 130, output
    study, _, children, parent = stores(out, "aborted")
    states = {t.number: (t.state, t.user_attrs.get("failure_kind")) for t in study.trials}
    assert (TrialState.FAIL, "interrupted") in states.values()
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not [r for r in children if r.info.status == "RUNNING"] and parent.info.status == "KILLED"
    assert "KILLED" in {r.info.status for r in children}


def _measuring(trial: optuna.trial.FrozenTrial) -> bool:
    """A running trial whose candidate is resolved: it is building or being measured."""
    return trial.state == TrialState.RUNNING and "candidate" in trial.user_attrs


def test_a_token_id_model_is_searched_served_on_its_own_rows_and_registered(tmp_path: Path, fast_config: dict) -> None:
    """int64 token ids through every runtime and bit width a search offers: nothing is cast to
    float, the probe serves real validation rows, and the registered pyfunc takes int64."""
    import mlflow
    import numpy as np
    import yaml

    from tests.tasks.token_bag import make_task

    fast_config.update(task="tests.tasks.token_bag:make_task")
    fast_config["space"]["quantize"]["bits"] = [32, 16, 8]
    fast_config["space"]["parallel"] = {"strategies": ["single"], "threads": [1], "runtimes": ["torch", "onnxruntime"]}
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    fast_config["search"].update(n_trials=6, study_name="tokens", sampler="random")
    run_cli(write_config(tmp_path / "tokens.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "tokens")
    assert not [t.user_attrs["failure_reason"] for t in study.trials if t.state == TrialState.FAIL]
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 6

    deploy_dir = tmp_path / "deploy"
    result = runner.invoke(app, ["select", "tokens", "--storage", f"sqlite:///{out / 'optuna.db'}",
                                 "--max-accuracy-drop", "0.5", "--output", str(deploy_dir)])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((deploy_dir / "deployment.yaml").read_text())
    assert spec["serving"]["input_dtype"] == "int64" and spec["serving"]["input_shape"] == [7]
    rows = make_task(0).test[0][:7]
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/slimsearch-tokens@champion").predict(rows.numpy())
    assert served.shape == (7, 2) and np.isfinite(served).all()


def test_a_repeated_proposal_is_answered_from_the_study_not_re_measured(tmp_path: Path, fast_config: dict) -> None:
    from slimsearch.search.store.pareto import front_trials
    from slimsearch.search.store.study import evaluated_count

    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32, 8, 4]},
                            "student": {"distill": False},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["torch"]}}
    fast_config["search"].update(n_trials=2, study_name="repeats", sampler="random")
    config = write_config(tmp_path / "repeats.yaml", **fast_config)
    run_cli(config)  # the two anchors: teacher fp32 and int8
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "repeats")
    study.enqueue_trial(dict(study.trials[0].params))  # the teacher again

    output = run_cli(config, "--n-trials", "1")
    study, _, children, _ = stores(out, "repeats")
    repeated = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert repeated and repeated[0].user_attrs["duplicate_of"] == 0 and repeated[0].values == study.trials[0].values
    assert "duplicate of trial 0" in cli_text(output)
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["summary"] for t in measured}) == len(measured) == 3 == evaluated_count(study)
    assert not {t.number for t in repeated} & {t.number for t in front_trials(study)}
    runs = {int(r.data.tags["trial_number"]) for r in children}
    assert not {t.number for t in repeated} & runs, "an answered repeat has no MLflow run"
    assert {t.number for t in measured} <= runs



def test_a_sampler_stuck_on_measured_candidates_is_sent_to_an_unmeasured_one(tmp_path: Path,
                                                                              fast_config: dict) -> None:
    from slimsearch.search.loop.proposals import EXPLORE_AFTER_DUPLICATES

    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32, 8, 4]},
                            "student": {"distill": False},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["torch"]}}
    fast_config["search"].update(n_trials=2, study_name="stuck", sampler="random")
    config = write_config(tmp_path / "stuck.yaml", **fast_config)
    run_cli(config)  # the two anchors: teacher fp32 and int8; teacher int4 is the one left
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "stuck")
    for _ in range(EXPLORE_AFTER_DUPLICATES):  # a sampler that keeps proposing the teacher
        study.enqueue_trial(dict(study.trials[0].params))

    output = run_cli(config, "--n-trials", "1")
    study, _, children, _ = stores(out, "stuck")
    assert sum("duplicate_of" in t.user_attrs for t in study.trials) == EXPLORE_AFTER_DUPLICATES
    explored = [t for t in study.trials if "explores" in t.user_attrs]
    assert len(explored) == 1 and explored[0].state == TrialState.COMPLETE
    assert explored[0].user_attrs["explores"] == EXPLORE_AFTER_DUPLICATES and "int4" in explored[0].user_attrs["summary"]
    assert "a random unmeasured one is measured next" in cli_text(output)
    tags = {int(r.data.tags["trial_number"]): r.data.tags for r in children}
    assert tags[explored[0].number]["explores"] == str(EXPLORE_AFTER_DUPLICATES)


def test_a_sampler_repeating_a_rejected_candidate_is_sent_to_an_unmeasured_one_not_stopped(
        tmp_path: Path, fast_config: dict) -> None:
    """The sampler learns nothing from a rejection: repeats of one rejected candidate are
    repeated proposals (then exploring), not 50 distinct rejections ending the run."""
    from slimsearch.search.loop.proposals import EXPLORE_AFTER_DUPLICATES, MAX_CONSECUTIVE_REJECTIONS

    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32, 8, 4]},
                            "student": {"distill": False},
                            "parallel": {"strategies": ["single", "tensor_parallel"], "degree": [2], "threads": [1],
                                         "runtimes": ["torch"]}}
    fast_config["search"].update(n_trials=2, study_name="rejects", sampler="random")
    config = write_config(tmp_path / "rejects.yaml", **fast_config)
    run_cli(config)  # the two anchors
    out = Path(fast_config["output_dir"])
    study, _, _, _ = stores(out, "rejects")
    sharded = {key: value for key, value in study.trials[0].params.items() if key != "parallel.threads"}
    sharded |= {"parallel.strategy": "tensor_parallel", "parallel.degree": 2, "parallel.rank_threads": 1}
    for _ in range(MAX_CONSECUTIVE_REJECTIONS + 5):  # a conv net cannot be tensor-parallel: rejected each time
        study.enqueue_trial(sharded)

    run_cli(config, "--n-trials", "1")
    study, _, children, _ = stores(out, "rejects")
    rejected = [t for t in study.trials if t.user_attrs.get("failure_kind") == "rejected"]
    assert len(rejected) > MAX_CONSECUTIVE_REJECTIONS, "every queued repeat was answered, and the run went on"
    rejected_runs = [r for r in children if r.data.tags.get("failure_kind") == "rejected"]
    assert len(rejected_runs) == 1, "the first rejection has a run; its repeats do not"
    explored = [t for t in study.trials if "explores" in t.user_attrs]
    assert explored and explored[0].state == TrialState.COMPLETE
    assert explored[0].user_attrs["explores"] == EXPLORE_AFTER_DUPLICATES, "explored after 30 repeats"


def test_an_accurate_new_model_s_deployment_variants_are_measured_next(tmp_path: Path, fast_config: dict) -> None:
    # the three anchors (teacher fp32, int8, the largest student), then the teacher's two variants
    fast_config["search"].update(n_trials=5, study_name="variants", deployment_variants=2)
    fast_config["constraints"] = ["accuracy_drop <= 0.5"]
    fast_config["space"]["parallel"] = {"strategies": ["single"], "threads": [1, 2], "runtimes": ["torch", "onnxruntime"]}
    run_cli(write_config(tmp_path / "v.yaml", **fast_config))
    study, _, children, _ = stores(Path(fast_config["output_dir"]), "variants")
    teacher = study.trials[0]  # the first anchor: the teacher itself, accurate by definition
    variants = [t for t in study.trials if t.user_attrs.get("variant_of") == 0 and t.state.is_finished()]
    assert len(variants) == 2, [(t.number, t.params, t.user_attrs.get("variant_of")) for t in study.trials]
    model = trained_model_params(teacher.params)
    assert all(trained_model_params(t.params) == model and t.params != teacher.params for t in variants)
    # never the study's own int8 anchor (queued before the variants were chosen) or a measured one
    assert not [t.number for t in variants if "duplicate_of" in t.user_attrs], "a variant repeated a candidate"
    tags = {int(r.data.tags["trial_number"]): r.data.tags.get("variant_of") for r in children}
    assert {tags[t.number] for t in variants} == {"0"}

    # A pruned student that met the constraint: its unpruned twin is its first follow-up.
    pruned = {"student": "distilled", "student.width": 0.5, "student.depth": 2, "student.temperature": 2.0,
              "student.alpha": 0.5, "prune.ratio": 0.25,
              "quantize.bits": 32, "parallel.strategy": "single", "parallel.threads": 1, "parallel.runtime": "torch"}
    study.enqueue_trial(pruned)
    waiting = len(study.get_trials(states=(TrialState.WAITING,)))  # follow-ups of the anchors, then it
    run_cli(write_config(tmp_path / "v.yaml", **fast_config), "--n-trials", str(waiting + 1))
    study, _, children, _ = stores(Path(fast_config["output_dir"]), "variants")
    student = next(t for t in study.trials if t.params == pruned)
    assert student.state == TrialState.COMPLETE and student.user_attrs["metrics"]["accuracy_drop"] <= 0.5
    follow_ups = sorted((t for t in study.trials if t.user_attrs.get("variant_of") == student.number),
                        key=lambda t: t.number)
    assert follow_ups and follow_ups[0].params == {**pruned, "prune.ratio": 0.0}, [t.params for t in follow_ups]
    twin = follow_ups[0]
    assert twin.state == TrialState.COMPLETE and twin.user_attrs["tags"]["cache_hit.distill"] == "true", \
        "measured next, re-using the distilled student"

def test_warm_start_enqueues_the_previous_study_s_front(tmp_path: Path, fast_config: dict) -> None:
    fast_config["search"].update(n_trials=3, study_name="night-1", sampler="random")
    run_cli(write_config(tmp_path / "n1.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    night1, _, _, _ = stores(out, "night-1")
    front = [t.params for t in night1.best_trials]

    fast_config["search"].update(n_trials=1, study_name="night-2")
    output = run_cli(write_config(tmp_path / "n2.yaml", **fast_config), "--warm-start", "night-1")
    assert f"warm start: {len(front)} front candidates of study 'night-1' enqueued" in cli_text(output)
    night2, _, _, _ = stores(out, "night-2")
    queued = [t.params or t.system_attrs.get("fixed_params") for t in night2.trials]  # waiting ones: enqueued params
    assert all(params in queued for params in front)
