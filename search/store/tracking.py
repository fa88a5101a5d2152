"""MLflow layout: one parent run per study, one nested child run per trial.

Uses ``MlflowClient`` (no global active-run state) so the driver controls exactly when
runs start and end; its calls wait out a briefly unreachable tracking server (``outages``). The parent run is found again by its study tag, so a resumed study
keeps logging into the same parent. Child runs carry the trial's params, metrics and
tags (``trial_number``, ``state``, ``feasible``, ``pareto``, ``simulated``); ``pareto``
is re-tagged whenever the front changes so that filtering ``tags.pareto = 'true'`` in
the UI shows exactly the current front.

``pareto`` is written as ``false`` when a trial's run is created and from then on only by
the front publishers (``set_pareto_tags``), never by the trial's own record: with workers,
a trial is on the front as soon as Optuna is told its values, so another process's
publisher may tag its run before the trial's own process ends it. Written by both, the
late ``false`` hid a front member from the trials view, and the two first writes of the
tag raced to insert one row (MLflow's ``set_tag`` is a select, then an insert): the
loser's IntegrityError ended a ``run --workers 2`` (seen in CI, 2026-12-01).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from slimsearch.search.objectives import LATENCY_P50_MS, LATENCY_P95_MS
from slimsearch.spaces.errors import SlimsearchError
from slimsearch.search.config import redact_url
from slimsearch.search.store.confirmation import confirmation_word
from slimsearch.search.store.outages import Outages, Retrying

STUDY_TAG = "slimsearch.study"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
STUDY_UID_TAG = "slimsearch.study_uid"
"""Which Optuna study a parent run records: a study recreated in a lost or replaced
storage has another uid, so its runs are never mixed into the old parent."""
ROLE_TAG = "slimsearch.role"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
"""MLflow's own mechanism for a shareable runs-view state (its "Share" button): an
experiment tag holding the view as JSON, opened by ``?viewStateShareKey=<key>``."""
PARETO_TAG = "pareto"
TRIAL_VIEW_TAGS = ("summary", PARETO_TAG, "feasible", "state")


class MlflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path, study_name: str, tags: dict[str, str],
                 outages: Outages):
        _ensure_sqlite_dir(tracking_uri)
        self.client = Retrying(MlflowClient(tracking_uri=tracking_uri), outages)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
        else:
            self.experiment_id = found.experiment_id
        # MLflow 3 opens an experiment without this tag in its GenAI view; a search is model training.
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
        self.created_parent = False
        """Whether this study had no parent run in the store (new, or the store was lost)."""
        self.parent_run_id = self._parent_run(study_name, tags)

    def _parent_run(self, study_name: str, tags: dict[str, str]) -> str:
        run_id = find_parent_run(self.client, self.experiment_id, study_name)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.created_parent = True
            run_id = self.client.create_run(
                self.experiment_id, run_name=study_name, tags={STUDY_TAG: study_name, ROLE_TAG: "study"}
            ).info.run_id
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return run_id

    def share_trials_view(self, metrics: list[str]) -> None:
        """Store the runs view ``slimsearch ui`` opens: this study's trials grouped by their
        ``pareto`` tag with ``metrics`` (objectives and constrained values) and the review tags
        as columns. MLflow lists groups in the order their first runs appear, so the runs are
        ordered by that tag, descending: the front (``true``), then the trials within noise of
        it (``near-front``), then the dominated ones (``false``).

        Without it the runs table shows the parent run collapsed and no metric column.
        MLflow does not share which rows are expanded, but it does share grouping, and
        groups open expanded -- so the trials are listed without a click.
        """
        state = {
            "searchFilter": f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            "orderByKey": f"tags.`{PARETO_TAG}`",
            "orderByAsc": False,
            "selectedColumns": [f"tags.`{t}`" for t in TRIAL_VIEW_TAGS[:1]] + [f"metrics.`{m}`" for m in metrics]
                               + [f"tags.`{t}`" for t in TRIAL_VIEW_TAGS[1:]],
            "columnWidths": {"tags.`summary`": 420},  # the candidate in words: worth the room
            "runsHiddenMode": "SHOW_ALL",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": PARETO_TAG}]},
        }
        self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_PREFIX + self.parent_run_id, json.dumps(state))

    def start_trial(self, number: int) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={"mlflow.parentRunId": self.parent_run_id, ROLE_TAG: "trial", "trial_number": str(number),
                  "state": "RUNNING", PARETO_TAG: "false"},
        )
        return run.info.run_id

    def finish_trial(
        self,
        run_id: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        status: str,
    ) -> None:
        """Log everything about a trial in one batch, then end its run with ``status``."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, shown(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items() if v is not None],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, status=status)

    def running_trial_runs(self) -> list[tuple[str, int]]:
        """``(run id, trial number)`` of this study's trial runs still marked RUNNING (not the
        runs of ``select``, which name the trial they deploy: a killed ``select`` is no trial)."""
        runs = self.client.search_runs([self.experiment_id], max_results=5000, filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and attributes.status = 'RUNNING'"))
        return [(r.info.run_id, int(r.data.tags["trial_number"])) for r in runs
                if "trial_number" in r.data.tags and r.data.tags.get(ROLE_TAG, "trial") == "trial"]

    def log_confirmation(self, records_by_run: dict[str, dict[str, Any]]) -> None:
        """A front confirmation's reading on each re-measured trial's run: ``confirmed_``
        latency metrics (when clean) and the tag ``latency_confirmed`` (yes / busy / failed)."""
        now = int(time.time() * 1000)
        for run_id, record in records_by_run.items():
            metrics = [Metric(f"confirmed_{name}", shown(record[name]), now, 0)
                       for name in (LATENCY_P50_MS, LATENCY_P95_MS) if record["clean"]]
            self.client.log_batch(run_id, metrics=metrics, tags=[RunTag("latency_confirmed", confirmation_word(record))])

    def log_parent_metrics(self, metrics: dict[str, float], step: int) -> None:
        """The study's charts (hypervolume, front size, predictor error) at trial ``step``, in one write."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_parent_params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_pareto_tags(self, pareto_by_run: dict[str, str]) -> None:
        """Write ``pareto`` (true / near-front / false) on these runs (the caller passes the changed ones)."""
        for run_id, value in pareto_by_run.items():
            self.client.set_tag(run_id, PARETO_TAG, value)

    def log_front(self, csv_text: str, rows: list[dict[str, Any]], report_html: str | None) -> None:
        self.client.log_text(self.parent_run_id, csv_text, "pareto/front.csv")
        self.client.log_dict(self.parent_run_id, {"front": rows}, "pareto/front.json")
        if report_html is not None:
            # Not log_figure: it links plotly.js from a CDN, which offline review machines cannot load.
            self.client.log_text(self.parent_run_id, report_html, "pareto/front.html")

    def log_calibration(self, readings: list[dict[str, Any]]) -> None:
        """The study's deployment calibration (``search/loop/calibration.py``) on its parent run."""
        self.client.log_dict(self.parent_run_id, {"deployments": readings}, "calibration/deployments.json")

    def end(self, status: str) -> None:
        self.client.set_terminated(self.parent_run_id, status=status)


@contextlib.contextmanager
def readable_tracking(tracking_uri: str) -> Iterator[None]:
    """A tracking store that cannot be read (a truncated ``mlflow.db``, a server that errs)
    is one line naming it and the way out, not a database traceback."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, MlflowException) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise TrackingUnreadable(
            f"the MLflow tracking store {redact_url(tracking_uri)} cannot be read ({type(exc).__name__}: {first}); "
            "move it aside (its runs are rebuilt from the Optuna study at the next run) or set "
            "tracking.tracking_uri elsewhere") from None


class TrackingUnreadable(SlimsearchError, RuntimeError):
    """The tracking store exists but cannot be read."""


def recorded_study(tracking_uri: str, experiment: str, study_name: str) -> tuple[str, str | None, int] | None:
    """``(parent run id, its study uid tag, number of child runs)`` of ``study_name``, or
    ``None`` where MLflow has no run of it: what a resumed study is checked against."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    parent = find_parent_run(client, found.experiment_id, study_name) if found else None
    if parent is None:
        return None
    children = client.search_runs([found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                                  max_results=1000)
    return parent, client.get_run(parent).data.tags.get(STUDY_UID_TAG), len(children)


def shown(value: float) -> float:
    """A trial's metric as the MLflow columns show it: 4 significant digits (a latency or
    memory reading is not repeatable beyond ~1 %, and the trials view prints every digit it
    gets); whole numbers (params, MACs, rows) stay exact. Optuna keeps the exact value."""
    value = float(value)
    return value if not math.isfinite(value) or value.is_integer() else float(f"{value:.4g}")


def trials_view_path(tracking_uri: str, experiment: str, study_name: str) -> str:
    """The MLflow UI path (after the server's address) of the study's trials view, or of
    the experiment list where the study has logged nothing yet."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    parent = find_parent_run(client, found.experiment_id, study_name) if found else None
    if parent is None or SHARED_VIEW_PREFIX + parent not in client.get_experiment(found.experiment_id).tags:
        return "/" if found is None else f"/#/experiments/{found.experiment_id}/runs"
    return f"/#/experiments/{found.experiment_id}/runs?viewStateShareKey={parent}"


def find_parent_run(client: MlflowClient, experiment_id: str, study_name: str) -> str | None:
    """The parent run of ``study_name`` in the experiment, if the study has logged one."""
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'study'",
        max_results=1,
    )
    return existing[0].info.run_id if existing else None


def _ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
