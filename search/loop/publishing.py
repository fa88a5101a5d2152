"""The front as a running search shows it: hypervolume, ``pareto`` tags, front table, report.

Each costs what changed, not what the study holds: the front comes from the driver's
ledger (updated per trial), a run's ``pareto`` tag is written only when its membership
changes (the tags last written are kept in the study, so a restart or another worker
writes nothing for an unchanged run), the front table whenever the front changes, and the
HTML report -- fANOVA and plots, seconds on a large study -- every ``REPORT_EVERY_S`` and
at the end. The ledger's snapshot is stored beside, for the read commands.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna

from slimsearch.search.objectives import MODEL_MB, QualityMetric, best_of
from slimsearch.search.review.study_review import StudyReview
from slimsearch.search.store.ledger import SNAPSHOT_ATTR, StudyLedger
from slimsearch.search.store.pareto import front_rows, hypervolume, noise_aware_front, pareto_tag
from slimsearch.search.store.tracking import MlflowTracker

if TYPE_CHECKING:
    from slimsearch.search.loop.recording import RunSummary

PARETO_TAGS = "pareto_tags"
"""Study attribute: the ``pareto`` tags last written that are not ``false`` ({trial number: tag})."""
REPORT_EVERY_S = 600.0
"""How often a running search republishes its HTML report (the front table: whenever it changes)."""
MAX_LOGGED_MODEL_BYTES = 200 * 1024 * 1024
"""Front models larger than this stay out of the tracking store."""


class FrontPublisher:
    """Keeps the front's records current for one search process."""

    def __init__(self, study: optuna.Study, ledger: StudyLedger, tracker: MlflowTracker, objectives: dict[str, str],
                 reference: list[float], quality: QualityMetric, staged_models: Path,
                 run_id_of: Callable[[optuna.trial.FrozenTrial], str | None]):
        self.study, self.ledger, self.tracker = study, ledger, tracker
        self.objectives, self.reference, self.quality = objectives, reference, quality
        self.staged_models = staged_models
        """Measured models of trials that may still be on the front, until logged or dominated."""
        self.run_id_of = run_id_of
        self._published_rows: list[dict[str, Any]] | None = None
        self._report_published_at = time.monotonic()

    def update(self, summary: RunSummary) -> tuple[str, dict[str, float]]:
        """Refresh hypervolume and the ``pareto`` tags; returns a progress line and the
        front's metrics to chart on the parent run."""
        self.ledger.catch_up()
        self.study.set_user_attr(SNAPSHOT_ATTR, self.ledger.snapshot())  # what status/front start from
        front = self.ledger.front_trials()
        members, within = noise_aware_front(self.study, front)
        directions = list(self.objectives.values())
        summary.hypervolume = hypervolume(front, directions, self.reference)
        noise_aware = hypervolume(members, directions, self.reference)
        # Optuna's plain front only grows; the noise-aware one may shrink when a new point
        # shows an old member's edge to be noise, so both are charted.
        charted = {"hypervolume": summary.hypervolume, "hypervolume_noise_aware": noise_aware,
                   "pareto_size": float(len(members))}
        on_front = {t.number for t in front}
        self._retag({t.number: pareto_tag(t.number, members, within) for t in front})
        for staged in self.staged_models.glob("trial-*.ts.pt"):
            if int(staged.name.removeprefix("trial-").split(".")[0]) not in on_front:
                staged.unlink()  # dominated now, dominated forever: its model is not needed
        best = " ".join(
            f"{name} {best_of(direction)(t.values[i] for t in members):.4g}"
            for i, (name, direction) in enumerate(self.objectives.items())
        ) if members else "no feasible trial yet"
        noise = f" (+{len(within)} within noise)" if within else ""
        return f"front {len(members)}{noise} · hv {summary.hypervolume:.4g} (noise-aware {noise_aware:.4g}) · best {best}", charted

    def _retag(self, tags: dict[int, str]) -> None:
        """Write the ``pareto`` tag of exactly the runs whose membership changed (a trial's
        run starts with ``false``)."""
        current = {number: tag for number, tag in tags.items() if tag != "false"}
        written = {int(n): tag for n, tag in self.study.user_attrs.get(PARETO_TAGS, {}).items()}
        changed = {n: current.get(n, "false") for n in current.keys() | written.keys()
                   if current.get(n, "false") != written.get(n, "false")}
        if not changed:
            return
        trials = self.ledger.seen_trials
        self.tracker.set_pareto_tags({run_id: tag for number, tag in changed.items()
                                      if (run_id := self.run_id_of(trials[number]))})
        self.study.set_user_attr(PARETO_TAGS, {str(n): tag for n, tag in sorted(current.items())})

    def publish(self, final: bool = False) -> None:
        """Front table (CSV + JSON) on the parent run when the front changed, the HTML report
        every ``REPORT_EVERY_S`` and at the end, and at the end (``final``) the front members' models."""
        self.ledger.catch_up()
        objectives = list(self.objectives)
        rows = [asdict(r) for r in front_rows(self.study, objectives, self.ledger.front_trials())]
        report_due = final or time.monotonic() - self._report_published_at >= REPORT_EVERY_S
        if rows == self._published_rows and not report_due:
            return
        report = StudyReview(self.study, self.ledger).html() if report_due else None
        self.tracker.log_front(front_csv(rows, objectives, self.quality), rows, report)
        self._published_rows = rows
        if report_due:
            self._report_published_at = time.monotonic()
        if final:
            self._log_front_models()

    def _log_front_models(self) -> None:
        """Attach each front member's measured model to its child run (once, size-bounded)."""
        for trial in self.ledger.front_trials():
            staged = self.staged_models / f"trial-{trial.number:04d}.ts.pt"
            run_id = self.run_id_of(trial)
            if not staged.exists() or not run_id or staged.stat().st_size > MAX_LOGGED_MODEL_BYTES:
                continue
            self.tracker.client.log_artifact(run_id, str(staged), "model")
            staged.unlink()


def front_csv(rows: list[dict[str, Any]], objectives: list[str], quality: QualityMetric) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "configuration", *objectives, quality.drop, quality.test, MODEL_MB, "simulated",
                     "within_noise_of", "latency_confirmed"])
    for row in rows:
        writer.writerow([row["number"], row["summary"], *(row["values"][o] for o in objectives),
                         row["quality_drop"], row["test_quality"], row[MODEL_MB], row["simulated"],
                         "" if row["within_noise_of"] is None else row["within_noise_of"], row["confirmed"]])
    return buffer.getvalue()
