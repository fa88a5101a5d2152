"""Any task metric, either direction: a regression searched by R^2 (maximised) and by MAE (minimised).

The diabetes task (``tests/tasks/regression.py``) has float targets and names its metric;
objectives, constraints, early stopping, the front, the report and ``select`` must all speak
that name and direction, and a minimised metric must be minimised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from optuna.study import StudyDirection

from slimsearch.pipelines import TaskLoadError, load_task
from slimsearch.search.cli import app
from slimsearch.search.review.study_review import StudyReview
from tests.conftest import write_config
from tests.helpers import cli_text, run_cli, runner, stores


def test_float_targets_train_a_regression_and_are_refused_for_a_classification(monkeypatch) -> None:
    from tests.tasks import regression

    task = load_task("tests.tasks.regression:make_r2_task", 0)
    assert task.train[1].dtype == torch.float32 and task.num_classes == 1
    classification = dataclasses.replace(regression.make_r2_task(0), regression=False)
    monkeypatch.setattr(regression, "as_classes", lambda seed: classification, raising=False)
    with pytest.raises(TaskLoadError, match="labels are float64; a classification task needs integer classes.*"
                                            "regression=True"):
        load_task("tests.tasks.regression:as_classes", 0)


def _regression_config(fast_config: dict, task: str, study: str) -> dict:
    fast_config.update(task=f"tests.tasks.regression:{task}")
    del fast_config["constraints"]  # the defaults, renamed to the task's metric
    fast_config["space"]["quantize"]["bits"] = [32, 8]
    fast_config["search"].update(n_trials=3, study_name=study, sampler="random", seed=4)
    fast_config["training"] = {"distill_epochs": 10, "finetune_epochs": 3}
    return fast_config


@pytest.mark.e2e
def test_a_regression_is_searched_reviewed_and_deployed_by_r2(tmp_path: Path, fast_config: dict) -> None:
    config = write_config(tmp_path / "r2.yaml", **_regression_config(fast_config, "make_r2_task", "r2"))
    output = cli_text(run_cli(config))
    assert "r2_drop" in output and "test_r2" in output, "the front table names the task's metric"
    study, _, children, _ = stores(Path(fast_config["output_dir"]), "r2")
    assert study.user_attrs["objectives"] == {"r2": "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"}
    assert study.user_attrs["config"]["constraints"] == ["r2_drop <= 0.01"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert complete and all({"r2", "r2_drop", "test_r2"} <= set(t.user_attrs["metrics"]) for t in complete)
    complete_runs = {t.user_attrs["mlflow_run_id"] for t in complete}
    assert all({"r2", "r2_drop"} <= set(run.data.metrics) for run in children if run.info.run_id in complete_runs)

    report = runner.invoke(app, ["report", str(config), "-o", str(tmp_path / "report.html")])
    assert report.exit_code == 0 and "r2_drop" in (tmp_path / "report.html").read_text()
    chosen = runner.invoke(app, ["select", str(config), "--max-drop", "0.5", "--prefer", "r2", "--no-register",
                                 "--output", str(tmp_path / "deploy")])
    assert chosen.exit_code == 0, chosen.output
    assert "re-measured: r2" in cli_text(chosen.output)
    measured = yaml.safe_load((tmp_path / "deploy" / "deployment.yaml").read_text())["measured"]
    assert measured["metric"] == {"name": "r2", "direction": "maximize"} and "r2_drop" in measured


@pytest.mark.e2e
def test_a_minimised_metric_is_minimised_from_the_search_to_the_selection(tmp_path: Path, fast_config: dict) -> None:
    raw = _regression_config(fast_config, "make_mae_task", "mae")
    mismatched = write_config(tmp_path / "wrong.yaml", **{**raw, "constraints": ["accuracy_drop <= 0.01"]})
    refused = runner.invoke(app, ["validate", str(mismatched)])
    assert refused.exit_code == 2 and "scores 'mae' (minimize)" in cli_text(refused.output)
    assert "mae_drop" in cli_text(refused.output), "the error names the fix"

    config = write_config(tmp_path / "mae.yaml", **raw)
    run_cli(config)
    study, _, _, _ = stores(Path(fast_config["output_dir"]), "mae")
    assert study.directions[0] == StudyDirection.MINIMIZE and list(study.user_attrs["objectives"])[0] == "mae"
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    teacher = study.user_attrs["baseline"]["metrics"]["mae"]
    for trial in complete:  # the drop is how much worse: a higher error than the teacher's
        metrics = trial.user_attrs["metrics"]
        assert metrics["mae_drop"] == pytest.approx(metrics["mae"] - teacher)
        assert trial.constraints == {"mae_drop <= 0.01": pytest.approx(metrics["mae_drop"] - 0.01)}

    chosen = runner.invoke(app, ["select", str(config), "--prefer", "mae", "--no-register",
                                 "--output", str(tmp_path / "deploy")])
    assert chosen.exit_code == 0, chosen.output
    best = min((t for t in complete if not t.user_attrs.get("simulated")), key=lambda t: t.user_attrs["metrics"]["mae"])
    expected = StudyReview(study).within_noise.get(best.number, best.number)  # equal within noise: the simpler ships
    assert f"chosen: trial {expected} " in cli_text(chosen.output), "the lowest error is preferred, not the highest"
