"""Serving runtimes come from one registry: a runtime is its row and its module.

The end-to-end test adds a runtime the way a user would (``tests/toy_runtime.py``, named
in ``SLIMSEARCH_RUNTIMES``) and follows it through a search and ``select``; the grep
test keeps runtime names out of every other module.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest
import yaml

from slimsearch.search.cli import app
from slimsearch.search.config import ConfigError, load_config
from slimsearch.spaces import PLUGINS_VARIABLE, runtime_specs
from tests.conftest import write_config
from tests.helpers import run_cli, runner, stores

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = {ROOT / "spaces" / "runtimes.py", *(ROOT / "evaluators" / "runtimes").glob("*.py")}


def _runtime_comparison() -> re.Pattern[str]:
    """A runtime or export-format name compared with (``==``, ``!=``, ``in``) or used as a
    runtime default: the branching a registry replaces. Package names stay allowed."""
    name = "(?:%s)" % "|".join(map(re.escape, sorted({s.name for s in runtime_specs()} |
                                                      {s.export_format for s in runtime_specs()})))
    compared = r"(?:[!=]=|\bin\b)"
    return re.compile(rf"""{compared}\s*\(?\s*["']{name}["']|["']{name}["']\s*{compared}|["']runtime["']\s*,\s*["']{name}["']""")


def test_no_module_outside_the_registry_compares_runtime_names() -> None:
    comparison = _runtime_comparison()
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in ("search", "spaces", "evaluators", "pipelines", "dashboards")
             for path in sorted((ROOT / folder).rglob("*.py")) if path not in REGISTRY
             for number, line in enumerate(path.read_text().splitlines(), 1) if comparison.search(line)]
    assert not found, "ask the runtime's row (spaces.runtimes) or its ServingRuntime:\n" + "\n".join(found)


def test_the_check_finds_a_runtime_comparison() -> None:
    comparison = _runtime_comparison()
    assert comparison.search('if candidate.runtime == "openvino":')
    assert comparison.search('if "torch_compile" in cfg.space.parallel.runtimes')
    assert comparison.search('runtime = candidate.get("runtime", "torch")')
    assert comparison.search("if fmt != 'torchscript' and bits < 16:")
    assert not comparison.search('_CHATTY = ("mlflow", "onnxruntime", "torch")')


def test_an_unknown_runtime_is_refused_naming_the_known_ones_and_how_to_add_one(tmp_path: Path, fast_config: dict) -> None:
    fast_config["space"]["parallel"]["runtimes"] = ["torch", "tensorrt"]
    with pytest.raises(ConfigError, match=f"unknown runtime 'tensorrt'; choose from torch, onnxruntime.*{PLUGINS_VARIABLE}"):
        load_config(write_config(tmp_path / "c.yaml", **fast_config))


@pytest.mark.e2e
def test_a_runtime_added_by_its_module_is_searched_measured_and_exported_by_select(
    tmp_path: Path, fast_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    importlib.import_module("tests.toy_runtime")  # registers the row in this process ...
    monkeypatch.setenv(PLUGINS_VARIABLE, "tests.toy_runtime")  # ... and in the probe processes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    fast_config["space"] = {"prune": {"low": 0.0, "high": 0.0}, "quantize": {"bits": [32]},
                            "student": {"width": [0.5], "depth": [1], "temperature": [2.0], "alpha": [0.5]},
                            "parallel": {"strategies": ["single"], "threads": [1], "runtimes": ["toy"]}}
    fast_config["search"].update(n_trials=2, study_name="toy")
    run_cli(write_config(tmp_path / "toy.yaml", **fast_config))
    out = Path(fast_config["output_dir"])
    study, _, children, _ = stores(out, "toy")
    complete = [t for t in study.trials if t.values]
    assert complete and {t.user_attrs["candidate"]["runtime"] for t in complete} == {"toy"}
    assert all(t.user_attrs["metrics"]["latency_p50_ms"] > 0 for t in complete), "measured in the probe, on .toy files"

    result = runner.invoke(app, ["select", "toy", "--storage", f"sqlite:///{out / 'optuna.db'}", "--no-register",
                                       "--max-accuracy-drop", "0.5", "--output", str(tmp_path / "deploy")])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((tmp_path / "deploy" / "deployment.yaml").read_text())
    assert spec["artifacts"] == {"frozen_torchscript": "model.frozen.toy"}
    assert (tmp_path / "deploy" / "model.frozen.toy").stat().st_size > 0

