"""A search process's hold on its study: everything opened, in order, before the first trial.

The order is the point. The teacher is prepared before the study is opened (a teacher
that cannot train records nothing); then the study, its baseline (the teacher measured
once per study, the yardstick of every trial), the ledger and the cost predictor (a
resumed study is replayed into both; the predictor first learns the study's deployment
calibration), the MLflow records and the parts that keep the two
stores in step: recording each trial, publishing the front, guarding proposals, confirming
the front. The driver only drives them.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from slimsearch.evaluators import Placement
from slimsearch.pipelines import CompressionPipeline, Task
from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.objectives import QUALITY_ATTR, QualityMetric
from slimsearch.search.loop.baseline import study_baseline
from slimsearch.search.loop.calibration import calibration_summary, deployment_calibration
from slimsearch.search.loop.confirmation import FrontConfirmer
from slimsearch.search.loop.early_stopping import EarlyStopping, TrialMonitor
from slimsearch.search.loop.errors import SearchInterrupted
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.proposals import ProposalGuard
from slimsearch.search.loop.publishing import FrontPublisher
from slimsearch.search.loop.record_repair import RecordRepair, check_tracking_matches
from slimsearch.search.loop.recording import TrialRecorder
from slimsearch.search.loop.teacher_progress import TeacherProgress, TeacherTrainingStopped
from slimsearch.search.loop.trial import Yardstick, make_placement
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.outages import Outages
from slimsearch.search.store.study import open_study
from slimsearch.search.store.tracking import STUDY_UID_TAG, MlflowTracker, readable_tracking
from slimsearch.search.store.windowed_sampler import WindowedTPESampler
from slimsearch.spaces import Candidate


@dataclass
class StudySession:
    """The open study and the parts a driver uses on it."""

    pipeline: CompressionPipeline
    placement: Placement
    study: optuna.Study
    baseline: dict[str, Any]
    """The teacher's measurement: metrics (quality, latency, reference latency) and hardware."""
    ledger: StudyLedger
    predictor: CostPredictor
    early_stopping: EarlyStopping | None
    tracker: MlflowTracker
    repair: RecordRepair
    recorder: TrialRecorder
    publisher: FrontPublisher
    proposals: ProposalGuard
    confirmer: FrontConfirmer
    yardstick: Yardstick

    def monitor(self, candidate: Candidate) -> TrialMonitor | None:
        """The early-stopping monitor for a trial of ``candidate`` (None when disabled)."""
        if self.early_stopping is None:
            return None
        # The ledger was caught up for this proposal (budget check, duplicate check).
        return self.early_stopping.for_trial(self.ledger.front_trials(), candidate)


def open_session(cfg: SlimsearchConfig, task: Task, quality: QualityMetric, worker: int, console: Console,
                 stop: threading.Event, workdir: Path, staged_models: Path, calibrate: bool = False) -> StudySession:
    """Prepare the teacher, open the study and everything that records it, for ``worker``;
    with ``calibrate``, the owner times the deployments the study has not calibrated yet."""
    placement = make_placement(cfg.evaluation)  # an unreachable Ray cluster records nothing either
    with console.status("preparing the teacher (trained once, then cached)"):
        try:
            pipeline = CompressionPipeline(task, cfg.cache_dir, cfg.training.recipe(), cfg.search.seed,
                                           cfg.evaluation.calibration_size,
                                           teacher_progress=TeacherProgress(task, console, stop))
        except TeacherTrainingStopped as exc:
            raise SearchInterrupted(f"{exc}; run the same command again to start study "
                                    f"'{cfg.search.study_name}'") from None
    study = open_study(cfg, worker, _outages("the Optuna storage", cfg, console))
    if QUALITY_ATTR not in study.user_attrs:
        study.set_user_attr(QUALITY_ATTR, quality.as_attr())  # read commands name its columns
    check_tracking_matches(study, cfg)
    console.print(f"[bold]study[/] {cfg.search.study_name} ({len(study.get_trials(deepcopy=False))} trials so far) "
                  f"in {redact_url(cfg.storage_url)}" + (f" as worker {worker}" if worker else ""))
    with console.status("measuring the teacher (once per study)"):
        baseline = study_baseline(study, cfg, pipeline, placement, workdir, console, worker)
    yardstick = Yardstick.of(baseline, quality.name)
    stopping = cfg.search.early_stopping
    early_stopping = EarlyStopping(stopping, cfg.objectives, cfg.parsed_constraints, quality,
                                   float(baseline["metrics"][quality.name])) if stopping.enabled else None
    # Every finished trial, any worker's, is folded in once; early stopping learns from each.
    ledger = StudyLedger(study, early_stopping.learn if early_stopping else None)
    study._pop_waiting_trial_id = ledger.pop_waiting  # type: ignore[method-assign] # noqa: SLF001 - the driver asks right after a catch-up
    if isinstance(study.sampler, WindowedTPESampler):
        study.sampler.follow(ledger)
    measure = calibrate and worker == 0
    with console.status("calibrating deployments for the cost predictor") as status:
        calibration, taken_now = deployment_calibration(study, cfg, pipeline, placement, workdir, yardstick, baseline,
                                                        measure, status.update)
    if taken_now:
        console.print(calibration_summary(taken_now))
    predictor = CostPredictor(pipeline.structure, cfg.search.seed)
    for reading in calibration:  # before any trial: what each deployment costs
        if "metrics" in reading:
            predictor.learn(Candidate.from_dict(reading["candidate"]), reading["metrics"], None, refit=False)
    for done in ledger.catch_up():  # a resumed study: the predictor learns what was measured
        if done.state == TrialState.COMPLETE and (record := records.TrialRecord(done)).candidate \
                and not records.is_duplicate(done):
            predictor.learn(record.candidate, record.metrics, None, refit=False)
    predictor.refit()
    reference = study.user_attrs[records.STUDY_REFERENCE_POINT]
    with readable_tracking(cfg.tracking_uri):
        tracker = MlflowTracker(cfg.tracking_uri, cfg.tracking.experiment, cfg.artifact_root, cfg.search.study_name,
                                parent_tags(cfg, study, baseline, reference),
                                _outages("the MLflow tracking store", cfg, console))
    if taken_now:
        tracker.log_calibration(calibration)
    repair = RecordRepair(study, tracker, cfg, console)
    recorder = TrialRecorder(study, tracker, cfg, quality, predictor, staged_models, console, ledger)
    return StudySession(
        pipeline, placement, study, baseline, ledger, predictor, early_stopping, tracker, repair, recorder,
        FrontPublisher(study, ledger, tracker, cfg.objectives, reference, quality, staged_models, repair.run_id_of),
        ProposalGuard(cfg, study, ledger, pipeline, recorder, predictor, console),
        FrontConfirmer(study, ledger, tracker, repair.run_id_of, pipeline, cfg.evaluation, placement, workdir,
                       yardstick, cfg.objectives, console.print),
        yardstick,
    )


def _outages(what: str, cfg: SlimsearchConfig, console: Console) -> Outages:
    """Waiting out ``what`` for ``search.storage_patience_s``, said on this run's console."""
    return Outages(what, cfg.search.storage_patience_s, lambda line: console.print(f"[yellow]{escape(line)}[/]"))


def parent_tags(cfg: SlimsearchConfig, study: optuna.Study, baseline: dict[str, Any],
                reference: list[float]) -> dict[str, str]:
    """The study's parent run tags: how it searched, on what, against which reference point."""
    return {
        STUDY_UID_TAG: study.user_attrs[records.STUDY_UID],
        "backend": cfg.search.backend,
        "sampler": cfg.search.sampler,
        "seed": str(cfg.search.seed),
        "task": cfg.task,
        "objectives": ",".join(f"{k}:{v}" for k, v in cfg.objectives.items()),
        "constraints": "; ".join(cfg.constraints),
        "reference_point": ",".join(f"{v:.6g}" for v in reference),
        "space_fingerprint": hashlib.sha256(cfg.space.model_dump_json().encode()).hexdigest()[:12],
        "optuna_storage": redact_url(cfg.storage_url),
        **{f"hardware.{key}": value for key, value in baseline["hardware"].items()},
    }
