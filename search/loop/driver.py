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
from dataclasses import dataclass, field
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

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.evaluators import MeasurementError, hardware_identity, missing_compiler
from slimsearch.pipelines import CompressionPipeline, Task, load_task, space_problem
from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.objectives import QUALITY_ATTR, QualityMetric, accurate_enough
from slimsearch.search.loop.early_stopping import EarlyStopping, TrialMonitor
from slimsearch.search.loop.teacher_progress import TeacherProgress, TeacherTrainingStopped
from slimsearch.search.loop.library_logs import route_library_logs
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.publishing import PARETO_TAGS, FrontPublisher
from slimsearch.search.loop.record_repair import RecordRepair, check_tracking_matches
from slimsearch.search.store.pareto import front_trials, reference_point
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.windowed_sampler import WindowedTPESampler
from slimsearch.search.store.outages import Outages, StorageOutage
from slimsearch.search.store.storage import Heartbeats, mark_trial_owner, rerun_once, unreachable
from slimsearch.search.store.study import (
    load_existing_study,
    open_study,
    stored_baseline,
)
from slimsearch.search.store.tracking import STUDY_UID_TAG, MlflowTracker, readable_tracking
from slimsearch.search.loop.trial import TrialOutcome, TrialResult, Yardstick, busy_host, make_placement, measure_candidate, run_candidate
from slimsearch.search.loop.workers import WorkerProcess, join_workers, signal_workers, spawn_workers
from slimsearch.spaces import (
    Candidate,
    InvalidCandidate,
    anchor_params,
    deployment_variants,
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
MAX_DEFERRALS = 2
"""Times a candidate whose latency was read on a busy host is queued to be measured again."""


class SearchError(SlimsearchError, RuntimeError):
    """The search cannot go on; the message says why and what to change."""


class SearchInterrupted(SlimsearchError, RuntimeError):
    """Ctrl-C: the running trial was marked and the front written; re-run to resume."""

    exit_code = 130
    label = "stopped"
    colour = "yellow"


@dataclass
class RunSummary:
    study_name: str
    evaluated: int = 0
    completed: int = 0
    failed: int = 0
    pruned: int = 0
    rejected: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    first_trial: int | None = None
    last_trial: int | None = None
    failure_reasons: dict[str, int] = field(default_factory=dict)
    pruned_rules: dict[str, int] = field(default_factory=dict)
    hypervolume: float = 0.0
    parent_run_id: str = ""

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.evaluated / self.seconds if self.seconds > 0 else 0.0


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
        self._last_reason = ""
        self._last_skip = ""
        """Why the last proposal was not run: "rejected" or "duplicate"."""
        self._rejected_candidates: set[str] = set()
        """Fingerprints of candidates this process rejected (the empty string: unresolvable)."""
        self.exhausted = False
        self.host_fault = ""
        """Why the machine (not a candidate) stopped the run, e.g. a full disk; empty while it can go on."""
        self._predictions: dict[int, dict[str, tuple[float, float]] | None] = {}
        """What the cost predictor said before each running trial was built."""

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
            self.baseline = self._baseline()
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
        self.publisher = FrontPublisher(self.study, self.ledger, self.tracker, cfg.objectives, self.reference,
                                        self.quality, self.staged_models, self.repair.run_id_of)
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
        if self.host_fault:  # publishing the front would meet the same full disk
            if self.worker == 0:
                self.tracker.end("FAILED")
            raise SearchError(self.host_fault)
        if workers:  # the workers' last trials
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
        if self._last_skip == "duplicate":
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
                              f"(e.g. {self._last_reason}); narrow the space section of the config")

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
            self.record_failure(trial, run_id, "interrupted", "interrupted by the user")
            raise
        return self.record_outcome(summary, trial, run_id, candidate, outcome)

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
                    self._answer_duplicate(summary, trial, run_id, candidate, earlier)
                    return None
                if (twin := self._measuring_now(candidate, trial.number)) is not None:
                    self._skip_twin(trial, run_id, candidate, twin)
                    return None
            reason = self._rejection(candidate)
        except InvalidCandidate as exc:
            reason = str(exc)
        if not reason:
            self._predictions[trial.number] = self.predictor.predict(candidate)
            return run_id, candidate
        self.record_outcome(summary, trial, run_id, candidate, TrialOutcome("rejected", reason=reason))
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

    def _skip_twin(self, trial: optuna.Trial, run_id: str, candidate: Candidate, twin: int) -> None:
        """Step aside for a twin being measured: recorded, not counted, and (like a repeated
        proposal) answered by exploring once the sampler keeps repeating itself."""
        self._last_skip = "duplicate"
        self.record_failure(trial, run_id, "concurrent", f"trial {twin} measures the same candidate now")
        self._print_trial(trial.number, candidate, f"[dim]trial {twin} measures the same candidate now: skipped[/]")

    def _answer_duplicate(self, summary: RunSummary, trial: optuna.Trial, run_id: str, candidate: Candidate,
                          earlier: optuna.trial.FrozenTrial) -> None:
        """Tell the sampler what ``earlier`` measured for the same candidate; nothing is re-run
        (``search.remeasure: true`` re-measures instead, e.g. to study noise)."""
        self._last_skip = "duplicate"
        summary.duplicates += 1
        trial.set_user_attr(records.DUPLICATE_OF, earlier.number)
        for key in (records.METRICS, records.TAGS, records.ACCURACY_CURVE, records.PRUNED_RULE, records.PRUNED_REASON,
                    records.PRUNED_AT):
            if key in earlier.user_attrs:
                trial.set_user_attr(key, earlier.user_attrs[key])
        if earlier.state == TrialState.COMPLETE:
            for name, violation in earlier.constraints.items():
                trial.set_constraint(name, violation)
            self.study.tell(trial, earlier.values)
        else:
            self.study.tell(trial, state=TrialState.PRUNED)
        self._finish_run(run_id, trial)
        self._print_trial(trial.number, candidate, f"[dim]duplicate of trial {earlier.number}: answered from the "
                                                   "study, not re-measured[/]")

    def monitor(self, candidate: Candidate) -> TrialMonitor | None:
        """The early-stopping monitor for a trial of ``candidate`` (None when disabled)."""
        if self.early_stopping is None:
            return None
        # The ledger was caught up for this proposal (budget check, duplicate check).
        return self.early_stopping.for_trial(self.ledger.front_trials(), candidate)

    def record_outcome(self, summary: RunSummary, trial: optuna.Trial, run_id: str, candidate: Candidate | None,
                       outcome: TrialOutcome) -> str:
        """Tell Optuna, then complete the MLflow run with the same facts; returns the outcome kind."""
        if outcome.kind == "rejected":
            # The sampler learns nothing from a rejection (a failed trial), so it may propose the
            # same candidate again: a repeat is a repeated proposal, not a new rejection, and
            # repeats lead to exploring unmeasured candidates instead of ending the run.
            fingerprint = candidate.fingerprint() if candidate else ""
            repeat = fingerprint in self._rejected_candidates
            self._rejected_candidates.add(fingerprint)
            self._last_skip, self._last_reason = "duplicate" if repeat else "rejected", outcome.reason
            self.record_failure(trial, run_id, "rejected", outcome.reason)
            summary.rejected += 1
            self._print_trial(trial.number, candidate, f"[yellow]rejected[/]: {escape(outcome.reason)}")
        elif outcome.kind == "host":
            self.record_failure(trial, run_id, "host", outcome.reason)
            self.study.enqueue_trial(trial.params)  # the resumed run measures it first
            self.host_fault = (f"trial {trial.number} was stopped by the host, not by its candidate ({outcome.reason}); "
                               f"free space under {self.config.output_dir} (slimsearch cache clear frees the stage "
                               "cache) and run the same command again to resume: the trial is not counted")
            self._print_trial(trial.number, candidate, f"[red]stopped by the host[/]: {escape(outcome.reason)}")
        elif outcome.kind == "failed":
            self.record_failure(trial, run_id, "error", outcome.reason, outcome.trace)
            summary.failed += 1
            summary.failure_reasons[outcome.rule] = summary.failure_reasons.get(outcome.rule, 0) + 1
            self._print_trial(trial.number, candidate, f"[red]failed[/]: {escape(outcome.reason)}")
        elif outcome.kind == "pruned":
            assert candidate is not None
            self._record_pruned(trial, run_id, candidate, outcome)
            summary.pruned += 1
            summary.pruned_rules[outcome.rule] = summary.pruned_rules.get(outcome.rule, 0) + 1
        elif outcome.result is not None and outcome.result.tags.get("noisy") == "true":
            assert candidate is not None
            return self._record_noisy(summary, trial, run_id, candidate, outcome.result)
        else:
            assert candidate is not None and outcome.result is not None
            if outcome.curve:
                trial.set_user_attr(records.ACCURACY_CURVE, outcome.curve)  # what later trials' stopping rules learn from
            self._record_success(trial, run_id, candidate, outcome.result)
            summary.completed += 1
            self._enqueue_deployment_variants(trial, outcome.result.metrics)
        return outcome.kind

    def _enqueue_deployment_variants(self, trial: optuna.Trial, metrics: dict[str, float]) -> None:
        """Measure other deployments of a new model next (``search.deployment_variants``):
        its built stages are cached, so each costs a probe, not a training run. Not for a
        model that misses a constraint on the task's metric: no deployment of it can meet it."""
        limit = self.config.search.deployment_variants
        if not limit or records.VARIANT_OF in trial.user_attrs:
            return
        if not accurate_enough({c.name: c.violation(metrics) for c in self.constraints}, self.quality):
            return
        for params in deployment_variants(self.config.space, trial.params, limit, self.config.search.seed + trial.number,
                                          self.config.evaluation.batch_size):
            self.study.enqueue_trial(params, user_attrs={records.VARIANT_OF: trial.number})

    def _record_success(self, trial: optuna.Trial, run_id: str, candidate: Candidate, result: Any) -> None:
        predicted = self._predictions.pop(trial.number, None)
        if predicted:
            trial.set_user_attr(records.PREDICTED, {name: value for name, (value, _) in predicted.items()})
        self.predictor.learn(candidate, result.metrics, predicted)
        metrics = result.metrics
        feasible = True
        for constraint in self.constraints:
            violation = constraint.violation(metrics)
            trial.set_constraint(constraint.name, violation)
            feasible &= violation <= 0
        trial.set_user_attr(records.METRICS, metrics)
        trial.set_user_attr(records.TAGS, result.tags)
        self.study.tell(trial, [metrics[name] for name in self.objectives])
        if result.artifact:
            self.staged_models.mkdir(parents=True, exist_ok=True)
            result.artifact.replace(self.staged_models / f"trial-{trial.number:04d}.ts.pt")
        self._finish_run(run_id, trial)
        shown = " ".join(f"{n}={metrics[n]:.4g}" for n in self.objectives)
        flag = "" if feasible else " [yellow](infeasible)[/]"
        sim = " [magenta]simulated[/]" if candidate.simulated else ""
        self._print_trial(trial.number, candidate, f"{shown}{flag}{sim}")

    def _record_noisy(self, summary: RunSummary, trial: optuna.Trial, run_id: str, candidate: Candidate,
                      result: Any) -> str:
        """A latency read while other work kept the cores busy is wrong, not just uncertain:
        the sampler is not told it and the front never holds it. The candidate is queued to be
        measured again (its stages are cached: a probe, not a training run), up to
        ``MAX_DEFERRALS`` times; then it fails as ``noisy`` and uses up its trial."""
        self._predictions.pop(trial.number, None)
        if result.artifact:
            result.artifact.unlink(missing_ok=True)
        m, attempt = result.metrics, int(trial.user_attrs.get(records.DEFERRALS, 0)) + 1
        trial.set_user_attr(records.METRICS, m)  # kept for the record, told to no one
        trial.set_user_attr(records.TAGS, result.tags)
        busy = busy_host(m)
        if attempt <= MAX_DEFERRALS:
            self.record_failure(trial, run_id, "deferred", f"latency not recorded: {busy}; queued to be measured again")
            self.study.enqueue_trial(trial.params, user_attrs={records.DEFERRALS: attempt})
            self._print_trial(trial.number, candidate, f"[yellow]deferred[/]: {busy}; measured again next")
            return "deferred"
        reason = (f"latency not recorded: {busy} in {attempt} attempts; run when the host is quieter "
                  "or raise evaluation.max_outside_load")
        self.record_failure(trial, run_id, "noisy", reason)
        summary.failed += 1
        summary.failure_reasons["noisy"] = summary.failure_reasons.get("noisy", 0) + 1
        self._print_trial(trial.number, candidate, f"[red]not measurable[/]: {escape(reason)}")
        return "failed"

    def _record_pruned(self, trial: optuna.Trial, run_id: str, candidate: Candidate, stop: TrialOutcome) -> None:
        """PRUNED in Optuna, FINISHED in MLflow with the rule, the point and the accuracy curve."""
        trial.set_user_attr(records.ACCURACY_CURVE, stop.curve)
        trial.set_user_attr(records.PRUNED_RULE, stop.rule)
        trial.set_user_attr(records.PRUNED_REASON, stop.reason)
        trial.set_user_attr(records.PRUNED_AT, stop.point)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._finish_run(run_id, trial)
        self._print_trial(trial.number, candidate, f"[cyan]stopped early[/] ({stop.rule}): {escape(stop.reason)}")

    def record_failure(self, trial: optuna.Trial, run_id: str, kind: str, reason: str, trace: str | None = None) -> None:
        trial.set_user_attr(records.FAILURE_KIND, kind)
        trial.set_user_attr(records.FAILURE_REASON, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self._finish_run(run_id, trial)
        if trace:
            self.tracker.client.log_text(run_id, trace, "failure/traceback.txt")

    def record_lost_worker(self, trial: optuna.Trial, run_id: str, candidate: Candidate, reason: str) -> None:
        """A trial whose worker process died under it (a host fault, not the candidate's):
        failed without using budget, and its parameters measured again once."""
        self.record_failure(trial, run_id, "stale", f"{reason}; the parameters were re-enqueued")
        rerun_once(self.study, self.study._storage.get_trial(trial._trial_id))  # noqa: SLF001
        self._print_trial(trial.number, candidate, f"[yellow]worker lost[/]: {escape(reason)}; measured again")

    def _finish_run(self, run_id: str, trial: optuna.Trial) -> None:
        """End the trial's MLflow run with exactly what Optuna now records for it."""
        frozen = self.study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - one trial, not the whole study
        self.tracker.finish_trial(run_id, *records.TrialRecord(frozen).mlflow())

    def _print_trial(self, number: int, candidate: Candidate | None, text: str) -> None:
        what = candidate.summary() if candidate else "?"
        self.console.print(f"trial {number:>4}  {what:<58} {text}")

    @property
    def teacher_quality(self) -> float:
        """The teacher's value of the task's metric, every trial's ``_drop`` is taken from."""
        return float(self.baseline["metrics"][self.quality.name])

    @property
    def yardstick(self) -> Yardstick:
        return Yardstick.of(self.baseline, self.quality.name)

    def _baseline(self) -> dict[str, Any]:
        """The teacher's measurement, taken once per study and reused on resume."""
        stored = stored_baseline(self.study)
        hardware = hardware_identity()
        if stored is None and self.worker:
            raise SearchError(f"study '{self.study.study_name}' has no baseline yet; start it with slimsearch run")
        if stored is not None:
            if stored["hardware"].get("cpu") != hardware["cpu"]:
                raise SearchError(
                    f"study '{self.study.study_name}' was measured on '{stored['hardware'].get('cpu')}', "
                    f"this host is '{hardware['cpu']}'; use a new search.study_name for this hardware"
                )
            return stored
        cfg = self.config
        teacher = Candidate(None, 0.0, 32, None, "single", 1, max(cfg.space.parallel.threads))
        result = self._measure_teacher(teacher)
        baseline = {"metrics": result.metrics, "hardware": result.hardware, "candidate": teacher.to_dict()}
        self.study.set_user_attr(records.STUDY_BASELINE, baseline)
        self.study.set_user_attr(records.STUDY_REFERENCE_POINT, reference_point(cfg.objectives, result.metrics))
        return baseline

    def _measure_teacher(self, teacher: Candidate) -> TrialResult:
        """The teacher served alone: the study's yardstick for quality drop, latency ratios and
        the paired-timing reference, so it is measured again while the host is busy."""
        cfg = self.config
        for attempt in range(1, MAX_DEFERRALS + 2):
            try:
                result = measure_candidate(teacher, self.pipeline, cfg.evaluation, self.placement, self.workdir,
                                           Yardstick())
            except MeasurementError as exc:  # the probe (timed out, or crashed), not the model
                raise SearchError(f"the teacher's serving measurement failed ({exc}); raise evaluation.timeout_s if "
                                  "the teacher is that slow here, then run the same command again") from exc
            except Exception as exc:  # every trial would fail the same way: stop before the first one
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise SearchError(f"the teacher itself cannot be served and measured ({type(exc).__name__}: {first}); "
                                  "it must be traceable by torch.jit.trace on the task's inputs") from exc
            if result.artifact:
                result.artifact.unlink()
            if result.tags["noisy"] != "true":
                return result
            self.console.print(f"the teacher's baseline was timed on a busy host ({busy_host(result.metrics)}); "
                               f"attempt {attempt} not used")
        raise SearchError(f"the host stayed busy while the teacher's baseline was timed ({busy_host(result.metrics)}); "
                          "every trial is measured against it: run when the host is quieter, or raise "
                          "evaluation.max_outside_load")

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
