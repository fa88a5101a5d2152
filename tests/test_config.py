from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from slimsearch.search.cli import app
from slimsearch.search.config import ConfigError, SlimsearchConfig, load_config
from slimsearch.search.objectives import Constraint
from tests.helpers import cli_text

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_shipped_example_equals_the_embedded_default() -> None:
    assert load_config(ROOT / "configs" / "digits.yaml") == SlimsearchConfig() == load_config(None)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("search:\n  n_trails: 5\n", "search.n_trails"),
        ("space:\n  quantize:\n    bits: [32, 5]\n", "space.quantize.bits"),
        ("constraints: ['latency <= 2']\n", "constraints"),
        ("objectives: {accuracy: maximize, speed: minimize}\n", "objectives"),
        ("search:\n  sampler: cmaes\n", "search.sampler"),
        ("evaluation:\n  round_s: 0\n", "evaluation.round_s"),
    ],
)
def test_validate_names_the_bad_field_on_one_line_and_exits_2(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1
    assert f"{path}: {field}" in message


def test_broken_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("search:\n  n_trials: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_validate_accepts_the_example() -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "configs" / "digits.yaml")])
    assert result.exit_code == 0 and "ok" in cli_text(result.output)


@pytest.mark.parametrize(
    ("text", "metrics", "violation"),
    [
        ("accuracy_drop <= 0.01", {"accuracy_drop": 0.03}, 0.02),
        ("accuracy >= 0.9", {"accuracy": 0.95}, -0.05),
        ("latency_p95_ms <= 2", {"latency_p95_ms": 1.5}, -0.5),
    ],
)
def test_constraint_violation_follows_optunas_sign(text: str, metrics: dict, violation: float) -> None:
    assert Constraint.parse(text).violation(metrics) == pytest.approx(violation)


@pytest.mark.parametrize("text", ["accuracy >= 1.5", "memory_mb <= -1", "accuracy_drop < 0.1", "Speed! <= 3"])
def test_impossible_or_malformed_constraints_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Constraint.parse(text)


def test_a_second_task_metric_beside_accuracy_is_refused_with_one_name_to_use() -> None:
    from slimsearch.search.config import SlimsearchConfig

    with pytest.raises(ValueError, match="'speed' in 'speed <= 3' is neither a serving metric .* nor the objectives' "
                                         "task metric \\(accuracy, accuracy_drop, test_accuracy\\)"):
        SlimsearchConfig.model_validate({"constraints": ["speed <= 3"]})
    with pytest.raises(ValueError, match="2 task metrics"):
        SlimsearchConfig.model_validate({"objectives": {"accuracy": "maximize", "r2": "maximize"}})


def test_a_default_objective_renamed_to_the_tasks_metric_still_refuses_an_accuracy_constraint() -> None:
    """Renamed objectives ``{mae}`` plus a written ``accuracy_drop`` constraint name two task
    metrics; the check must see both, whichever order a set would list them in."""
    from slimsearch.search.objectives import QualityMetric

    config = SlimsearchConfig.model_validate({"constraints": ["accuracy_drop <= 0.01"]})
    assert config.quality_names == ["accuracy"]
    with pytest.raises(ConfigError, match="measures 'accuracy' but task 't' scores 'mae' \\(minimize\\)"):
        config.with_task_metric(QualityMetric("mae", "minimize"), "t")


def test_space_command_prints_parameters_and_candidates() -> None:
    result = runner.invoke(app, ["space", "--samples", "3"])
    assert result.exit_code == 0
    assert "parallel.degree" in cli_text(result.output) and result.output.count("|") >= 9


@pytest.mark.parametrize("name", ["../../escape", "a/b", "", ".hidden", "x" * 101, "with space"])
def test_study_names_that_would_escape_or_mangle_output_dir_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"search:\n  study_name: '{name}'\n")
    with pytest.raises(ConfigError, match="safe study name|study_name"):
        load_config(path)


def test_passwords_in_storage_urls_are_redacted() -> None:
    from slimsearch.search.config import redact_url

    assert redact_url("postgresql://user:s3cret@db:5432/optuna") == "postgresql://user:***@db:5432/optuna"
    assert redact_url("postgresql+psycopg://u@db/optuna") == "postgresql+psycopg://u@db/optuna"
    assert redact_url("sqlite:////tmp/o.db") == "sqlite:////tmp/o.db"


def test_a_binary_config_file_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x80\x02\x8a\nPK\x03\x04\xff\xfe binary")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "not a text file" in cli_text(result.output)
    assert len(result.output.strip().splitlines()) == 1


def test_validate_imports_the_task(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("task: no_such_module_anywhere:make_task\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "no_such_module_anywhere" in cli_text(result.output)


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        nested = [t for t in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        paths += _field_paths(nested[0], f"{prefix}{name}.") if nested else [prefix + name]
    return paths


def test_the_readme_is_short_and_its_config_table_names_every_field() -> None:
    """A newcomer finds the quick start, the whole config and the task API in the first 200
    lines; every config field (nested ones included) is in the row of its section."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 350
    first = "\n".join(lines[:200])
    assert all(part in first for part in ("## Quick start", "## Config file", "# my_task.py", "def make_task"))
    rows = {line.split("`")[1]: line for line in lines if line.startswith("| `")}
    for path in _field_paths(SlimsearchConfig):
        parts = path.split(".")
        section = next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in rows)
        missing = [p for p in parts[section.count(".") + 1:] if f"`{p}`" not in rows[section]]
        assert not missing, f"README config table: {path} is not in the row of {section}"
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", "\n".join(lines)):
        assert (ROOT / target).is_file(), f"README links to a missing {target}"


def test_resuming_a_study_made_with_retired_settings_names_them() -> None:
    import optuna

    from slimsearch.search.store.study import StudyMismatch, _check_or_store

    study = optuna.create_study()
    study.set_user_attr("config.evaluation", {"warmup": 20, "repeats": 30, "rounds": 3})
    with pytest.raises(StudyMismatch, match="older slimsearch whose config.evaluation had repeats, warmup"):
        _check_or_store(study, "config.evaluation", {"warmup_s": 0.3, "round_s": 0.3, "rounds": 3})
