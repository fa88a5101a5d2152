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

import os
import shutil
import threading
import time
from pathlib import Path

import optuna
import torch
from filelock import FileLock
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from slimsearch.pipelines import Task, load_task
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.objectives import QualityMetric
from slimsearch.search.loop.baseline import baseline_param_prefix
from slimsearch.search.loop.library_logs import route_library_logs
from slimsearch.search.loop.preflight import check_before_training, cores, owning_run, remove_orphaned_workdirs
from slimsearch.search.loop.proposals import warm_start_params
from slimsearch.search.loop.publishing import PARETO_TAGS
from slimsearch.search.loop.errors import SearchError, SearchInterrupted
from slimsearch.search.loop.recording import RunSummary
from slimsearch.search.loop.session import StudySession, open_session
from slimsearch.search.store import records
from slimsearch.search.store.outages import StorageOutage
from slimsearch.search.store.storage import Heartbeats
from slimsearch.search.store.trial_writes import owner_attrs
from slimsearch.search.loop.trial import run_candidate
from slimsearch.search.loop.workers import WorkerProcess, join_workers, signal_workers, spawn_workers
from slimsearch.spaces import Candidate, anchor_params


class SearchDriver:
    session: StudySession
    heartbeats: Heartbeats

    def __init__(self, config: SlimsearchConfig, console: Console | None = None, stop: threading.Event | None = None,
                 worker: int = 0):
        self.config = config
        self.worker = worker
        """0: the run that owns the study's budget, front artifacts and parent run; else a joining worker."""
        self.console = console or Console()
        # Set (e.g. by a first Ctrl-C) to stop after the running trial, at a point where nothing is half-written.
        self.stop = stop or threading.Event()
        # Per process: two processes measuring the same candidate must not share its files.
        self.workdir = Path(config.output_dir) / "artifacts-tmp" / str(os.getpid())
        # Measured models of trials that may still be on the front, until logged or dominated.
        self.staged_models = Path(config.output_dir) / "front-models" / config.search.study_name

    def run(self, n_trials: int | None = None, timeout_s: float | None = None, warm_start: str | None = None) -> RunSummary:
        """Run (or, as a worker, join) the search until the study's budget is used up; a new
        study with ``warm_start`` first measures that study's front (last night's model family)."""
        task = load_task(self.config.task, self.config.search.seed)  # before touching storage: a bad task records nothing
        self.config = cfg = self.config.for_task(task)  # the task's metric named in objectives and constraints
        check_before_training(cfg, task, self.worker)
        route_library_logs(Path(cfg.output_dir) / "logs" / f"{cfg.search.study_name}.log")
        with owning_run(cfg, self.worker):
            remove_orphaned_workdirs(self.workdir.parent)
            try:
                return self._run(task, n_trials or cfg.search.n_trials,
                                 timeout_s if timeout_s is not None else cfg.search.timeout_s, warm_start)
            finally:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, task: Task, n_trials: int, timeout_s: float | None, warm_start: str | None) -> RunSummary:
        cfg = self.config
        torch.set_num_threads(max(1, len(cores()) // cfg.search.workers))
        quality = QualityMetric(task.metric_name, task.metric_direction)
        self.session = session = open_session(cfg, task, quality, self.worker, self.console, self.stop, self.workdir,
                                              self.staged_models, cfg.search.calibrates(n_trials))
        workers = self._claim_budget(n_trials, warm_start) if self.worker == 0 else []
        if records.STUDY_BUDGET not in session.study.user_attrs:
            raise SearchError(f"study '{cfg.search.study_name}' has no budget yet; start it with slimsearch run")
        summary = RunSummary(cfg.search.study_name, parent_run_id=session.tracker.parent_run_id)
        session.repair.fail_stale_trials()  # a killed run's trials (either backend) are failed and queued to run again
        self.heartbeats = Heartbeats(session.study, cfg.search.heartbeat_s)
        started = time.monotonic()
        try:
            if cfg.search.backend == "ray":
                from slimsearch.search.loop.ray_backend import run_with_ray_tune  # Ray imports only when used

                run_with_ray_tune(self, summary, session.study.user_attrs[records.STUDY_BUDGET][1], timeout_s)
            else:
                self._loop(summary, *session.study.user_attrs[records.STUDY_BUDGET], timeout_s, workers)
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
        return self._finish(summary, workers)

    def _finish(self, summary: RunSummary, workers: list[WorkerProcess]) -> RunSummary:
        """Wait for the workers, confirm and publish the front, end the parent run as it went."""
        cfg, session = self.config, self.session
        try:
            problems = join_workers(workers, self.stop)
        except KeyboardInterrupt:  # aborted while waiting for the workers: they were stopped
            self.stop.set()
            problems = []
        for problem in problems:
            self.console.print(f"[red]{problem}[/]")
        if session.recorder.host_fault:  # publishing the front would meet the same full disk
            if self.worker == 0:
                session.tracker.end("FAILED")
            raise SearchError(session.recorder.host_fault)
        confirmed = self.worker == 0 and not self.stop.is_set() and self._confirm_front()
        if workers or confirmed:  # the workers' last trials; the confirmed front's tags
            session.tracker.log_parent_metrics(session.publisher.update(summary)[1], step=summary.last_trial or 0)
        if self.worker == 0:
            session.publisher.publish(final=True)
        if self.stop.is_set():
            if self.worker == 0:
                session.tracker.end("KILLED")
            raise SearchInterrupted(
                f"interrupted after {summary.evaluated} trials; run the same command again to resume "
                f"study '{cfg.search.study_name}'"
            )
        if self.worker == 0:
            session.tracker.end("FINISHED")
        return summary

    def _confirm_front(self) -> bool:
        """Re-measure the front together (the front shown, logged and selected from); a Ctrl-C
        stops it, and the front keeps each trial's own reading."""
        try:
            return self.session.confirmer.run()
        except KeyboardInterrupt:
            self.stop.set()
            self.console.print("[yellow]confirmation interrupted: the front keeps each trial's own latency[/]")
            return False

    def _claim_budget(self, n_trials: int, warm_start: str | None) -> list[WorkerProcess]:
        """The run's owner: repair the MLflow records, set this run's budget, queue the first
        candidates of a new study and start the local workers."""
        cfg, session = self.config, self.session
        workers: list[WorkerProcess] = []
        rebuilt, repaired = session.repair.rebuild_lost_store(), session.repair.end_orphaned_runs()
        for line in filter(None, (rebuilt, repaired)):
            self.console.print(line)
        if rebuilt:  # rebuilt runs start as pareto=false: the front is tagged again
            session.study.set_user_attr(PARETO_TAGS, {})
        prefix = baseline_param_prefix(session.study)
        session.tracker.log_parent_params({f"{prefix}{k}": round(v, 6) for k, v in session.baseline["metrics"].items()})
        shown = [*cfg.objectives, *(c.metric for c in cfg.parsed_constraints)]
        session.tracker.share_trials_view(list(dict.fromkeys(shown)))
        if not session.study.get_trials(deepcopy=False):
            for params in anchor_params(cfg.space) + warm_start_params(cfg, warm_start, self.console):
                session.study.enqueue_trial(params)
        start = session.ledger.evaluated  # caught up above; enqueued trials are not evaluated
        session.study.set_user_attr(records.STUDY_BUDGET, [start, start + n_trials])
        if cfg.search.backend == "optuna":  # with Ray, search.workers bounds concurrent Tune trials
            workers = spawn_workers(cfg, cfg.search.workers - 1)
        return workers

    def _loop(self, summary: RunSummary, start: int, target: int, timeout_s: float | None,
              workers: list[WorkerProcess]) -> None:
        """Trials until the study holds ``target`` evaluated trials, counting every worker's.

        Checking the count and asking for a trial happen under one lock, so workers never
        overshoot the budget; a worker that finds the budget covered by running trials
        waits for them (one may still be rejected, or belong to a dead worker).
        """
        session, started = self.session, time.monotonic()
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
                    session.repair.fail_stale_trials()
                    session.ledger.catch_up()  # other workers' trials too: the budget and the sampler's history
                    done = session.ledger.evaluated
                    trial = session.study.ask() if done + len(session.ledger.running()) < target else None
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
                    session.proposals.check_rejections()
                    if session.proposals.exhausted:
                        break
                    continue
                if outcome == "deferred":
                    continue
                alive = 1 + sum(w.process.poll() is None for w in workers) if self.worker == 0 else None
                status = self.after_evaluated(summary) + (f" · workers {alive}" if alive else "")
                progress.update(bar, completed=session.ledger.evaluated - start, status=status)
        if self.stop.is_set():
            signal_workers(workers)

    def after_evaluated(self, summary: RunSummary) -> str:
        """Count an evaluated trial, refresh the front (published every ``front_every``
        trials by the study's owner); returns the progress line."""
        session = self.session
        session.proposals.evaluated()
        summary.evaluated += 1
        if self.worker == 0 and session.confirmer.due():
            session.confirmer.run()
        front, charted = session.publisher.update(summary)
        status = f"failed {summary.failed} · stopped early {summary.pruned} · " + front
        if mape := session.predictor.mape():
            status += " · " + session.predictor.describe()
            charted |= {f"predictor_mape_{name}": value for name, value in mape.items()}
        session.tracker.log_parent_metrics(charted, step=summary.last_trial or 0)
        if self.worker == 0 and summary.evaluated % self.config.search.front_every == 0:
            session.publisher.publish()
        return status

    def _one_trial(self, summary: RunSummary, trial: optuna.Trial) -> str:
        session = self.session
        started = self.start_trial(summary, trial)
        if started is None:
            return "rejected"
        run_id, candidate = started
        try:
            outcome = run_candidate(candidate, session.pipeline, self.config.evaluation, session.placement,
                                    self.workdir, session.yardstick, session.monitor(candidate))
        except KeyboardInterrupt:
            session.recorder.record_failure(trial, run_id, "interrupted", "interrupted by the user")
            raise
        return session.recorder.record_outcome(summary, trial, run_id, candidate, outcome)

    def start_trial(self, summary: RunSummary, trial: optuna.Trial) -> tuple[str, Candidate] | None:
        """Resolve the trial's candidate and open its MLflow run; ``None`` when the proposal is
        answered, skipped or rejected (``ProposalGuard``), without using up budget."""
        owner = {records.WORKER: self.worker, **owner_attrs()}
        summary.first_trial = trial.number if summary.first_trial is None else summary.first_trial
        summary.last_trial = trial.number
        return self.session.proposals.admit(summary, trial, owner)
