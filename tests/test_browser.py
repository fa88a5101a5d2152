"""The morning review as a person sees it: MLflow UI in headless Chromium (Debian's package).

Set-up (`make test`) installs chromium; CI sets SLIMSEARCH_REQUIRE_BROWSER=1 so a missing
browser fails the run instead of skipping this test. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from slimsearch.dashboards.launch import start_mlflow_ui
from slimsearch.search.store.pareto import NEAR_FRONT, noise_aware_front
from slimsearch.search.store.tracking import trials_view_path
from slimsearch.search.cli import app
from tests.conftest import write_config

pytestmark = pytest.mark.e2e  # whole searches: deselect with -m 'not e2e' for a fast run

CHROMIUM = shutil.which("chromium")
REQUIRED = os.environ.get("SLIMSEARCH_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("SLIMSEARCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not CHROMIUM and not REQUIRED, reason="Debian chromium is not installed (make test installs it)")
def test_mlflow_ui_shows_the_study_and_its_pareto_report(tmp_path: Path, fast_config: dict) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "SLIMSEARCH_REQUIRE_BROWSER=1 but chromium is not on PATH"
    fast_config["search"].update(n_trials=3, study_name="browser-check")
    result = CliRunner().invoke(app, ["run", str(write_config(tmp_path / "b.yaml", **fast_config))])
    assert result.exit_code == 0, result.output
    out = Path(fast_config["output_dir"])
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_experiment_by_name("slimsearch").experiment_id
    kind = client.get_experiment(experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development", "the UI opens on the training-runs view, not the GenAI one"
    parent = client.search_runs([experiment_id], "tags.`slimsearch.role` = 'study'")[0].info.run_id
    study = optuna.load_study(study_name="browser-check", storage=f"sqlite:///{out / 'optuna.db'}")
    front_size = len(noise_aware_front(study)[0])  # the report's front table: members, not points within noise

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = start_mlflow_ui(tracking_uri, port=_free_port())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 2400, "height": 1000})  # no column virtualised away
            page.goto(server.url + trials_view_path(tracking_uri, "slimsearch", "browser-check"))
            page.get_by_role("link", name=re.compile(r"^#0 teacher \| prune 0 \|")).first.wait_for(timeout=60_000)
            for column in ("summary", "accuracy", "latency_p50_ms", "memory_mb", "accuracy_drop", "pareto"):
                header = page.locator(".ag-header-cell", has_text=column)
                assert header.count() >= 1, f"the trials view has no '{column}' column"
            assert page.get_by_role("link", name=re.compile(r"^#2 ")).count() == 1, "every trial listed by its configuration"
            groups = [page.get_by_text(f"Group: {tag}") for tag in ("true", NEAR_FRONT, "false")]
            assert groups[0].count() == 1, "the front is a group of its own"
            heights = [group.bounding_box()["y"] for group in groups if group.count()]
            assert heights == sorted(heights), "the front group first, then those within noise of it, then the rest"
            page.screenshot(path=str(ARTIFACTS / "mlflow-trials-view.png"))

            page.goto(f"{server.url}/#/experiments/{experiment_id}/runs/{parent}/artifacts/pareto/front.html")
            report = page.frame_locator("iframe.mlflow-html-iframe")
            report.locator("#pareto-plot .main-svg").first.wait_for(timeout=60_000)
            assert report.locator("#front-table tbody tr").count() == front_size > 0
            page.screenshot(path=str(ARTIFACTS / "mlflow-pareto-report.png"))
            browser.close()
    finally:
        server.stop()
    assert all((ARTIFACTS / f"mlflow-{name}.png").stat().st_size > 10_000 for name in ("trials-view", "pareto-report"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
