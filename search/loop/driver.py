"""The search loop: ask Optuna for a candidate, build and measure it, record it everywhere.

Uses Optuna's ask/tell interface so the driver decides the order of records: the
trial's outcome is told to Optuna first, then the MLflow child run is completed with the
same values. A candidate that cannot exist here is recorded as a FAIL with
``failure_kind=rejected`` and does not use up the trial budget; any other exception is a
FAIL with ``failure_kind=error`` and the study continues -- except a full disk, which is
the host's fault: that trial is FAIL with ``failure_kind=host`` (not counted) and the run
stops with one line saying what to free. A stop request (first Ctrl-C)
ends the run after the running trial; an interrupt (second Ctrl-C) marks the running trial
as failed (``interrupted``). Either way the front is written and the parent run ends KILLED.

Several workers (``search.workers`` processes on this host, or ``slimsearch worker`` on
other hosts) share one study: the budget is counted in the study, each running trial
records a heartbeat, and the trial of a worker that died is failed, its MLflow run ended
KILLED, and its parameters re-run once (Optuna's ``RetryHeartbeatStaleTrialCallback``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import psutil
import torch
from filelock import FileLock, Timeout
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from slimsearch.evaluators import missing_compiler
from slimsearch.pipelines import CompressionPipeline, Task, load_task, space_problem
from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.objectives import QUALITY_ATTR, QualityMetric
from slimsearch.search.loop.early_stopping import EarlyStopping, TrialMonitor
from slimsearch.search.loop.teacher_progress import TeacherProgress, TeacherTrainingStopped
from slimsearch.search.loop.library_logs import route_library_logs
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.publishing import PARETO_TAGS, FrontPublisher
from slimsearch.search.loop.record_repair import RecordRepair, check_tracking_matches
from slimsearch.search.loop.baseline import study_baseline
from slimsearch.search.loop.confirmation import FrontConfirmer
from slimsearch.search.loop.errors import SearchError, SearchInterrupted
from slimsearch.search.loop.recording import RunSummary, TrialRecorder
from slimsearch.search.store.pareto import front_trials
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.windowed_sampler import WindowedTPESampler
from slimsearch.search.store.outages import Outages, StorageOutage
from slimsearch.search.store.storage import Heartbeats, mark_trial_owner, unreachable
from slimsearch.search.store.study import load_existing_study, open_study
from slimsearch.search.store.tracking import STUDY_UID_TAG, MlflowTracker, readable_tracking
from slimsearch.search.loop.trial import TrialOutcome, Yardstick, make_placement, run_candidate
from slimsearch.search.loop.workers import WorkerProcess, join_workers, signal_workers, spawn_workers
from slimsearch.spaces import (
    Candidate,
    InvalidCandidate,
    anchor_params,
    rejection_reason,
    suggest_candidate,
    unmeasured_params,
)

MAX_CONSECUTIVE_REJECTIONS = 50
MAX_CONSECUTIVE_DUPLICATES = 200
# After this many proposals in a row repeated measured candidates, a random unmeasured one
# is measured next (found within EXPLORE_DRAWS random draws, else the space is exhausted).
EXPLORE_AFTER_DUPLICATES = 30
EXPLORE_DRAWS = 200


class SearchDriver:
    def __init__(self, config: SlimsearchConfig, console: Console | None = None, stop: threading.Event | None = None,
                 worker: int = 0):
        self.config = config
        self.worker = worker
        """0: the run that owns the study's budget, front artifacts and parent run; else a joining worker."""
        self.console = console or Console()
        # Set (e.g. by a first Ctrl-C) to stop after the running trial, at a point where nothing is half-written.
        self.stop = stop or threading.Event()
        self._use_config(config)
        # Per process: two processes measuring the same candidate must not share its files.
        self.workdir = Path(config.output_dir) / "artifacts-tmp" / str(os.getpid())
        # Measured models of trials that may still be on the front, until logged or dominated.
        self.staged_models = Path(config.output_dir) / "front-models" / config.search.study_name
        self._rejected_in_a_row = self._duplicates_in_a_row = 0
        self.exhausted = False

    def run(self, n_trials: int | None = None, timeout_s: float | None = None, warm_start: str | None = None) -> RunSummary:
        """Run (or, as a worker, join) the search until the study's budget is used up; a new
        study with ``warm_start`` first measures that study's front (last night's model family)."""
        task = load_task(self.config.task, self.config.search.seed)  # before touching storage: a bad task records nothing
        self._use_config(self.config.for_task(task))
        cfg = self.config
        self.quality = QualityMetric(task.metric_name, task.metric_direction)
        if problem := space_problem(task, cfg.space.students_from_scratch):
            raise SearchError(problem)
        if "torch_compile" in cfg.space.parallel.runtimes and (problem := missing_compiler()):
            raise SearchError(f"{problem}; install one (e.g. apt install g++) or remove torch_compile from "
                              "space.parallel.runtimes")
        _check_writable(Path(cfg.output_dir))
        # The run's owner checks the servers before anything trains; a worker it started
        # moments later (or one joining an overnight run) waits an outage out like every call.
        for setting, url in (("search.storage", cfg.storage_url), ("tracking.tracking_uri", cfg.tracking_uri)):
            if not self.worker and (problem := unreachable(url)):
                raise SearchError(f"{setting} {redact_url(url)} does not answer ({problem}); start the server or "
                                  "correct the URL (nothing was trained or recorded)")
        route_library_logs(Path(cfg.output_dir) / "logs" / f"{cfg.search.study_name}.log")
        with self._owning_run():
            _remove_orphaned_workdirs(self.workdir.parent)
            try:
                return self._run(task, n_trials or cfg.search.n_trials,
                                 timeout_s if timeout_s is not None else cfg.search.timeout_s, warm_start)
            finally:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _outages(self, what: str) -> Outages:
        """Waiting out ``what`` for ``search.storage_patience_s``, said on this run's console."""
        return Outages(what, self.config.search.storage_patience_s,
                       lambda line: self.console.print(f"[yellow]{escape(line)}[/]"))

    def _use_config(self, config: SlimsearchConfig) -> None:
        """Adopt ``config`` (resolved for the task once it is loaded: its metric's name)."""
        self.config = config
        self.objectives = list(config.objectives)
        self.directions = list(config.objectives.values())
        self.constraints = config.parsed_constraints

    @contextlib.contextmanager
    def _owning_run(self) -> Iterator[None]:
        """One ``slimsearch run`` per study and host: a second one would draw the same
        candidates (same sampler seed) and double the budget's owner; workers join instead."""
        if self.worker:
            yield
            return
        name = self.config.search.study_name
        lock = FileLock(str(Path(self.config.output_dir) / f".{name}.run.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SearchError(f"study '{name}' is already being run by another slimsearch run on this host; "
                              "add processes to it with slimsearch worker CONFIG, or wait for it to finish") from None
        try:
            yield
        finally:
            lock.release()

    def _run(self, task: Task, n_trials: int, timeout_s: float | None, warm_start: str | None) -> RunSummary:
        cfg = self.config
        torch.set_num_threads(max(1, len(_cores()) // cfg.search.workers))
        self.placement = make_placement(cfg.evaluation)  # an unreachable Ray cluster records nothing either
        with self.console.status("preparing the teacher (trained once, then cached)"):
            # Before the study is opened: a teacher that cannot train or run records nothing.
            try:
                self.pipeline = CompressionPipeline(
                    task, cfg.cache_dir, cfg.training.recipe(), cfg.search.seed, cfg.evaluation.calibration_size,
                    teacher_progress=TeacherProgress(task, self.console, self.stop),
                )
            except TeacherTrainingStopped as exc:
                raise SearchInterrupted(f"{exc}; run the same command again to start study "
                                        f"'{cfg.search.study_name}'") from None
        self.study = open_study(cfg, self.worker, self._outages("the Optuna storage"))
        if QUALITY_ATTR not in self.study.user_attrs:
            self.study.set_user_attr(QUALITY_ATTR, self.quality.as_attr())  # read commands name its columns
        check_tracking_matches(self.study, cfg)
        self.console.print(f"[bold]study[/] {cfg.search.study_name} ({len(self.study.get_trials(deepcopy=False))} trials so far) "
                           f"in {redact_url(cfg.storage_url)}" + (f" as worker {self.worker}" if self.worker else ""))
        with self.console.status("measuring the teacher (once per study)"):
            self.baseline = study_baseline(self.study, cfg, self.pipeline, self.placement, self.workdir,
                                           self.console, self.worker)
        self.reference = self.study.user_attrs[records.STUDY_REFERENCE_POINT]
        stopping = cfg.search.early_stopping
        self.predictor = CostPredictor(cfg.search.seed)
        self.early_stopping = EarlyStopping(stopping, cfg.objectives, self.constraints, self.quality,
                                            self.teacher_quality) if stopping.enabled else None
        # Every finished trial, any worker's, is folded in once; early stopping learns from each.
        self.ledger = StudyLedger(self.study, self.early_stopping.learn if self.early_stopping else None)
        if isinstance(self.study.sampler, WindowedTPESampler):
            self.study.sampler.follow(self.ledger)
        for done in self.ledger.catch_up():  # a resumed study: the predictor learns what was measured
            if done.state == TrialState.COMPLETE and (record := records.TrialRecord(done)).candidate \
                    and not records.is_duplicate(done):
                self.predictor.learn(record.candidate, record.metrics, None, refit=False)
        self.predictor.refit()
        with readable_tracking(cfg.tracking_uri):
            self.tracker = MlflowTracker(cfg.tracking_uri, cfg.tracking.experiment, cfg.artifact_root,
                                         cfg.search.study_name, self._parent_tags(),
                                         self._outages("the MLflow tracking store"))
        self.repair = RecordRepair(self.study, self.tracker, cfg, self.console)
        self.recorder = TrialRecorder(self.study, self.tracker, cfg, self.quality, self.predictor, self.staged_models,
                                      self.console)
        self.publisher = FrontPublisher(self.study, self.ledger, self.tracker, cfg.objectives, self.reference,
                                        self.quality, self.staged_models, self.repair.run_id_of)
        self.confirmer = FrontConfirmer(self.study, self.ledger, self.tracker, self.repair.run_id_of, self.pipeline,
                                        cfg.evaluation, self.placement, self.workdir, self.yardstick, cfg.objectives,
                                        self.console.print)
        workers: list[WorkerProcess] = []
        if self.worker == 0:
            rebuilt, repaired = self.repair.rebuild_lost_store(), self.repair.end_orphaned_runs()
            for line in filter(None, (rebuilt, repaired)):
                self.console.print(line)
            if rebuilt or repaired:  # runs written again from Optuna say pareto=false: the front is re-tagged
                self.study.set_user_attr(PARETO_TAGS, {})
            self.tracker.log_parent_params({f"baseline.{k}": round(v, 6) for k, v in self.baseline["metrics"].items()})
            self.tracker.share_trials_view(list(dict.fromkeys([*cfg.objectives, *(c.metric for c in self.constraints)])))
            if not self.study.get_trials(deepcopy=False):
                for params in anchor_params(cfg.space) + self._warm_start_params(warm_start):
                    self.study.enqueue_trial(params)
            start = self.ledger.evaluated  # caught up above; enqueued trials are not evaluated
            self.study.set_user_attr(records.STUDY_BUDGET, [start, start + n_trials])
            if cfg.search.backend == "optuna":  # with Ray, search.workers bounds concurrent Tune trials
                workers = spawn_workers(cfg, cfg.search.workers - 1)
        elif records.STUDY_BUDGET not in self.study.user_attrs:
            raise SearchError(f"study '{cfg.search.study_name}' has no budget yet; start it with slimsearch run")
        summary = RunSummary(cfg.search.study_name, parent_run_id=self.tracker.parent_run_id)
        self.repair.fail_stale_trials()  # a killed run's trials (either backend) are failed and queued to run again
        self.heartbeats = Heartbeats(self.study, cfg.search.heartbeat_s)
        started = time.monotonic()
        try:
            if cfg.search.backend == "ray":
                from slimsearch.search.loop.ray_backend import run_with_ray_tune  # Ray imports only when used

                run_with_ray_tune(self, summary, self.study.user_attrs[records.STUDY_BUDGET][1], timeout_s)
            else:
                self._loop(summary, *self.study.user_attrs[records.STUDY_BUDGET], timeout_s, workers)
        except KeyboardInterrupt:
            self.stop.set()
            signal_workers(workers)  # the second signal: workers abort their trials too
        except StorageOutage:  # past its patience: the workers wait for the same server, and give up too
            self.stop.set()
            join_workers(workers, self.stop)
            raise
        finally:
            self.heartbeats.close()
            summary.seconds = time.monotonic() - started
        try:
            problems = join_workers(workers, self.stop)
        except KeyboardInterrupt:  # aborted while waiting for the workers: they were stopped
            self.stop.set()
            problems = []
        for problem in problems:
            self.console.print(f"[red]{problem}[/]")
        if self.recorder.host_fault:  # publishing the front would meet the same full disk
            if self.worker == 0:
                self.tracker.end("FAILED")
            raise SearchError(self.recorder.host_fault)
        # The front shown, logged and selected from is the one re-measured together.
        confirmed = self.worker == 0 and not self.stop.is_set() and self.confirmer.run()
        if workers or confirmed:  # the workers' last trials; the confirmed front's tags
            self.tracker.log_parent_metrics(self.publisher.update(summary)[1], step=summary.last_trial or 0)
        if self.worker == 0:
            self.publisher.publish(final=True)
        if self.stop.is_set():
            if self.worker == 0:
                self.tracker.end("KILLED")
            raise SearchInterrupted(
                f"interrupted after {summary.evaluated} trials; run the same command again to resume "
                f"study '{cfg.search.study_name}'"
            )
        if self.worker == 0:
            self.tracker.end("FINISHED")
        return summary

    def _loop(self, summary: RunSummary, start: int, target: int, timeout_s: float | None,
              workers: list[WorkerProcess]) -> None:
        """Trials until the study holds ``target`` evaluated trials, counting every worker's.

        Checking the count and asking for a trial happen under one lock, so workers never
        overshoot the budget; a worker that finds the budget covered by running trials
        waits for them (one may still be rejected, or belong to a dead worker).
        """
        started = time.monotonic()
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console) as progress:
            bar = progress.add_task("trials", total=target - start, status="")
            while not self.stop.is_set():
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    self.console.print(f"timeout of {timeout_s:.0f}s reached; stopping"
                                       + (" (workers finish their running trials)" if workers else ""))
                    signal_workers(workers)
                    break
                lock = FileLock(str(Path(self.config.output_dir) / f".{self.config.search.study_name}.ask.lock"))
                with lock:
                    self.repair.fail_stale_trials()
                    self.ledger.catch_up()  # other workers' trials too: the budget and the sampler's history
                    done = self.ledger.evaluated
                    trial = self.study.ask() if done + len(self.ledger.running()) < target else None
                if trial is None:
                    if done >= target:
                        break
                    time.sleep(self.config.search.heartbeat_s)
                    continue
                with self.heartbeats.beating(trial):
                    outcome = self._one_trial(summary, trial)
                summary.seconds = time.monotonic() - started
                if outcome == "host":
                    break
                if outcome == "rejected":
                    self.check_rejections()
                    if self.exhausted:
                        break
                    continue
                if outcome == "deferred":
                    continue
                alive = 1 + sum(w.process.poll() is None for w in workers) if self.worker == 0 else None
                status = self.after_evaluated(summary) + (f" · workers {alive}" if alive else "")
                progress.update(bar, completed=self.ledger.evaluated - start, status=status)
        if self.stop.is_set():
            signal_workers(workers)

    def _warm_start_params(self, source: str | None) -> list[dict[str, Any]]:
        """The front of study ``source`` (same storage) as params of this space: what worked
        for the previous model of the family is measured first. Candidates this space
        cannot express are left out, and said so."""
        if source is None:
            return []
        front = front_trials(load_existing_study(self.config.storage_url, source))
        params, skipped = [], 0
        for trial in front:
            try:
                suggest_candidate(optuna.trial.FixedTrial(trial.params), self.config.space)
                params.append(dict(trial.params))
            except ValueError:  # a parameter or choice this space does not have
                skipped += 1
        self.console.print(f"warm start: {len(params)} front candidates of study '{source}' enqueued"
                           + (f" ({skipped} not in this space)" if skipped else ""))
        return params

    def check_rejections(self) -> None:
        """Stop a search whose space yields nothing this host can build or serve, or whose
        sampler only proposes candidates already measured (the space is exhausted)."""
        if self.recorder.last_skip == "duplicate":
            self._duplicates_in_a_row += 1
            if self._duplicates_in_a_row % EXPLORE_AFTER_DUPLICATES == 0:
                self._explore()
            self.exhausted = self.exhausted or self._duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES
            if self.exhausted:
                self.console.print(f"{self._duplicates_in_a_row} proposals in a row repeated measured candidates: the "
                                   "space looks exhausted; stopping (widen the space or set search.remeasure: true)")
            return
        self._rejected_in_a_row += 1
        if self._rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
            raise SearchError(f"{self._rejected_in_a_row} candidates in a row were rejected "
                              f"(e.g. {self.recorder.last_reason}); narrow the space section of the config")

    def _explore(self) -> None:
        """Enqueue a random candidate no trial has proposed yet: the sampler keeps repeating
        measured ones (converged on a discrete space), which is not the space's end. None
        left in ``EXPLORE_DRAWS`` random draws: the space is exhausted."""
        self.ledger.catch_up()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        proposed = self.ledger.proposed | {Candidate.from_dict(t.user_attrs[records.CANDIDATE]).fingerprint()
                                           for t in running if records.CANDIDATE in t.user_attrs}
        draw_seed = self.config.search.seed + len(self.study.get_trials(deepcopy=False))
        params = unmeasured_params(self.config.space, proposed, draw_seed,
                                   EXPLORE_DRAWS, lambda candidate: not self._rejection(candidate))
        if params is None:
            self.exhausted = True
            return
        self.study.enqueue_trial(params, user_attrs={records.EXPLORES: self._duplicates_in_a_row})
        self.console.print(f"{self._duplicates_in_a_row} proposals in a row repeated measured candidates: "
                           "a random unmeasured one is measured next")

    def after_evaluated(self, summary: RunSummary) -> str:
        """Count an evaluated trial, refresh the front (published every ``front_every``
        trials by the study's owner); returns the progress line."""
        self._rejected_in_a_row = self._duplicates_in_a_row = 0
        summary.evaluated += 1
        if self.worker == 0 and self.confirmer.due():
            self.confirmer.run()
        front, charted = self.publisher.update(summary)
        status = f"failed {summary.failed} · stopped early {summary.pruned} · " + front
        if mape := self.predictor.mape():
            status += " · " + self.predictor.describe()
            charted |= {f"predictor_mape_{name}": value for name, value in mape.items()}
        self.tracker.log_parent_metrics(charted, step=summary.last_trial or 0)
        if self.worker == 0 and summary.evaluated % self.config.search.front_every == 0:
            self.publisher.publish()
        return status

    def _one_trial(self, summary: RunSummary, trial: optuna.Trial) -> str:
        started = self.start_trial(summary, trial)
        if started is None:
            return "rejected"
        run_id, candidate = started
        try:
            outcome = run_candidate(candidate, self.pipeline, self.config.evaluation, self.placement, self.workdir,
                                    self.yardstick, self.monitor(candidate))
        except KeyboardInterrupt:
            self.recorder.record_failure(trial, run_id, "interrupted", "interrupted by the user")
            raise
        return self.recorder.record_outcome(summary, trial, run_id, candidate, outcome)

    def start_trial(self, summary: RunSummary, trial: optuna.Trial) -> tuple[str, Candidate] | None:
        """Open the trial's MLflow run and resolve its candidate; a candidate that cannot
        exist here is recorded as rejected (``None``), without using up budget."""
        run_id = self.tracker.start_trial(trial.number)
        trial.set_user_attr(records.MLFLOW_RUN_ID, run_id)
        trial.set_user_attr(records.WORKER, self.worker)
        mark_trial_owner(trial)
        summary.first_trial = trial.number if summary.first_trial is None else summary.first_trial
        summary.last_trial = trial.number
        candidate: Candidate | None = None
        try:
            candidate = suggest_candidate(trial, self.config.space)
            trial.set_user_attr(records.CANDIDATE, candidate.to_dict())
            trial.set_user_attr(records.SUMMARY, candidate.summary())
            trial.set_user_attr(records.SIMULATED, candidate.simulated)
            if not self.config.search.remeasure:
                self.ledger.catch_up()  # what other workers finished or started since the proposal began
                if (earlier := self.ledger.measured_trial(candidate)) is not None:
                    self.recorder.answer_duplicate(summary, trial, run_id, candidate, earlier)
                    return None
                if (twin := self._measuring_now(candidate, trial.number)) is not None:
                    self.recorder.skip_twin(trial, run_id, candidate, twin)
                    return None
            reason = self._rejection(candidate)
        except InvalidCandidate as exc:
            reason = str(exc)
        if not reason:
            self.recorder.predictions[trial.number] = self.predictor.predict(candidate)
            return run_id, candidate
        self.recorder.record_outcome(summary, trial, run_id, candidate, TrialOutcome("rejected", reason=reason))
        return None

    def _rejection(self, candidate: Candidate) -> str | None:
        """Why ``candidate`` cannot be built or served here, found before any training."""
        try:
            return rejection_reason(candidate, self.config.evaluation.batch_size) or self.pipeline.rejection(candidate)
        except InvalidCandidate as exc:
            return str(exc)

    def _measuring_now(self, candidate: Candidate, number: int) -> int | None:
        """The number of an earlier trial another worker is measuring ``candidate`` in right now
        (as of the ledger's last catch-up). The earlier one goes on: two trials that each see
        the other cannot both step aside."""
        fingerprint = candidate.fingerprint()
        for trial in self.ledger.running():
            stored = trial.user_attrs.get(records.CANDIDATE)
            if trial.number < number and stored and Candidate.from_dict(stored).fingerprint() == fingerprint:
                return trial.number
        return None

    def monitor(self, candidate: Candidate) -> TrialMonitor | None:
        """The early-stopping monitor for a trial of ``candidate`` (None when disabled)."""
        if self.early_stopping is None:
            return None
        # The ledger was caught up for this proposal (budget check, duplicate check).
        return self.early_stopping.for_trial(self.ledger.front_trials(), candidate)

    @property
    def teacher_quality(self) -> float:
        """The teacher's value of the task's metric, every trial's ``_drop`` is taken from."""
        return float(self.baseline["metrics"][self.quality.name])

    @property
    def yardstick(self) -> Yardstick:
        return Yardstick.of(self.baseline, self.quality.name)

    def _parent_tags(self) -> dict[str, str]:
        cfg = self.config
        return {
            STUDY_UID_TAG: self.study.user_attrs[records.STUDY_UID],
            "backend": cfg.search.backend,
            "sampler": cfg.search.sampler,
            "seed": str(cfg.search.seed),
            "task": cfg.task,
            "objectives": ",".join(f"{k}:{v}" for k, v in cfg.objectives.items()),
            "constraints": "; ".join(cfg.constraints),
            "reference_point": ",".join(f"{v:.6g}" for v in self.reference),
            "space_fingerprint": hashlib.sha256(cfg.space.model_dump_json().encode()).hexdigest()[:12],
            "optuna_storage": redact_url(cfg.storage_url),
            **{f"hardware.{key}": value for key, value in self.baseline["hardware"].items()},
        }


def _check_writable(directory: Path) -> None:
    """Stores, cache and artifacts all go under output_dir: find out before anything is trained."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SearchError(f"output_dir '{directory}' is not a writable folder ({exc.strerror or exc}); "
                          "choose another output_dir") from None


def _remove_orphaned_workdirs(root: Path) -> None:
    """Temp folders of processes that died (SIGKILL, OOM) are left behind; remove them."""
    for entry in root.glob("*") if root.exists() else []:
        if entry.is_dir() and entry.name.isdigit() and not psutil.pid_exists(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file():  # the flat layout of earlier versions
            entry.unlink(missing_ok=True)


def _cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
