"""The Ray Tune backend (``search.backend: ray``): trials run as Tune trials on a Ray cluster.

Same study, same records as the Optuna backend. Ray Tune's ``OptunaSearch`` asks and
tells the study in the configured Optuna storage, and the driver process, where the
searcher lives, records every trial in MLflow (one parent run, one nested child run per
trial), so the MLflow layout and ``slimsearch front|report|select`` are unchanged.

- :class:`StudySearcher` subclasses ``OptunaSearch`` (multi-objective metric/mode) on the
  driver's own study object: it resolves each trial's candidate in the driver, where a
  candidate that cannot exist is recorded as rejected and asked again (never sent to the
  cluster, never using budget); on completion it records the trial like the Optuna
  backend does, constraints included (``OptunaSearch`` does not pass constraints).
- ``ConcurrencyLimiter`` bounds running trials to ``search.workers``;
  ``reuse_actors=True`` keeps each actor's compression pipeline (task, teacher, teacher
  logits) for its next trial (a fresh actor costs seconds of start-up per trial).
- Each trial reserves ``search.ray.cpus_per_trial`` CPUs and uses as many torch threads;
  ``search.ray.address`` (or ``--address``) joins a running cluster, else Ray starts
  locally. Output paths are made absolute: Tune actors do not share the driver's cwd.
- The driver records heartbeats for the trials it runs on the cluster, so if the driver
  dies its running trials are failed and re-run once when the study is resumed with
  ``slimsearch run``. The study in storage is the single record of what ran; a new Tune
  experiment runs the remaining budget. (``Tuner.restore`` would replay the searcher's
  last checkpoint, which is older than the storage: measured, it left orphaned RUNNING
  trials in the study.)
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from slimsearch.pipelines import CompressionPipeline, load_task
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.objectives import minimising_signs
from slimsearch.search.loop.early_stopping import TrialMonitor
from slimsearch.search.loop.ray_cluster import ray_cluster
from slimsearch.search.store.study import evaluated_count
from slimsearch.search.loop.trial import UNCOUNTED, TrialOutcome, Yardstick, make_placement, run_candidate
from slimsearch.spaces import Candidate, SpaceSpec, suggest_candidate

if TYPE_CHECKING:
    from slimsearch.search.loop.driver import SearchDriver
    from slimsearch.search.loop.recording import RunSummary

# Tune's own SIGINT handler and result loggers would compete with the driver's: Ctrl-C
# goes through the driver's stop event, and results are recorded in Optuna and MLflow.
# Stopped-early and failed trials report an outcome without objective values.
TUNE_ENVIRONMENT = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                    "RAY_CHDIR_TO_TRIAL_DIR": "0", "TUNE_RESULT_BUFFER_LENGTH": "1",
                    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}


def run_with_ray_tune(driver: SearchDriver, summary: RunSummary, target: int, timeout_s: float | None) -> None:
    """Run Tune trials until the study holds ``target`` evaluated trials (or stop/timeout)."""
    cfg = absolute_paths(driver.config)
    os.environ.update(TUNE_ENVIRONMENT)
    remaining = target - evaluated_count(driver.session.study)
    if remaining <= 0:
        return
    with ray_cluster(cfg.search.ray.address, Path(cfg.output_dir), cfg.search.study_name, driver.console.print):
        # Tune's result files are off (results go to Optuna and MLflow); don't warn that they are missing.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        _fit(driver, summary, cfg, remaining, timeout_s)


def _fit(driver: SearchDriver, summary: RunSummary, cfg: SlimsearchConfig, remaining: int,
         timeout_s: float | None) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, study_config=cfg, yardstick=driver.session.yardstick),
        {"cpu": cfg.search.ray.cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(StudySearcher(driver, summary), max_concurrent=cfg.search.workers),
            num_samples=remaining, time_budget_s=timeout_s, reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=cfg.search.study_name, storage_path=str(Path(cfg.output_dir) / "ray-results"),
                                  stop=_StopRequested(driver), verbose=0),
    )
    tuner.fit()


def absolute_paths(config: SlimsearchConfig) -> SlimsearchConfig:
    return config.model_copy(update={"output_dir": str(Path(config.output_dir).resolve())})


class _DriverBound:
    """Tune pickles its searcher and stopper into the experiment directory for
    ``Tuner.restore``, which slimsearch does not use (the study in storage is the record);
    the live driver, its study and its stores stay out of that file."""

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in _LIVE_STATE}


_LIVE_STATE = {"driver", "summary", "started", "_ot_study", "_ot_trials", "_space"}


class StudySearcher(_DriverBound, OptunaSearch):
    """``OptunaSearch`` on the driver's study; every trial recorded by the driver."""

    def __init__(self, driver: SearchDriver, summary: RunSummary):
        self.driver = driver  # before OptunaSearch's __init__, which sets the study up
        self.summary = summary
        self.started: dict[str, tuple[str, Candidate]] = {}
        cfg = driver.config
        super().__init__(
            space=functools.partial(_define_candidate, spec=cfg.space),
            metric=list(cfg.objectives),
            mode=["min" if sign > 0 else "max" for sign in minimising_signs(cfg.objectives.values())],
            sampler=driver.session.study.sampler,
            study_name=cfg.search.study_name,
        )

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__getstate__(), file)

    def _setup_study(self, mode: Any) -> None:
        self._ot_study = self.driver.session.study  # the study open_study checked and configured

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Ask until a candidate can exist here; rejected ones are recorded in between."""
        while not self.driver.stop.is_set():
            self.driver.session.ledger.catch_up()  # ask claims queued trials from the ledger (session.py)
            trial = self._ot_study.ask()
            started = self.driver.start_trial(self.summary, trial)
            if started is None:
                self.driver.session.proposals.check_rejections()
                continue
            self._ot_trials[trial_id] = trial
            self.started[trial_id] = started
            self.driver.heartbeats.add(trial)
            monitor = self.driver.session.monitor(started[1])
            return {"candidate": started[1].to_dict(), "monitor": monitor}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Multi-objective: intermediate results are handled by early stopping in the trial."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self.started:
            return
        self._completed_trials.add(trial_id)
        trial = self._ot_trials[trial_id]
        run_id, candidate = self.started.pop(trial_id)
        self.driver.heartbeats.remove(trial)
        outcome = (result or {}).get("outcome")
        recorder = self.driver.session.recorder
        if outcome is None and self.driver.stop.is_set():
            recorder.record_failure(trial, run_id, "interrupted", "interrupted by the user")
            return
        if outcome is None and error:
            recorder.record_lost_worker(trial, run_id, candidate, "its Ray worker died mid-trial (a lost node or a "
                                        "killed process); see the Ray logs")
            return
        if outcome is None:
            outcome = TrialOutcome("failed", reason="the Ray trial ended without a result; see the Ray logs",
                                   rule="RayTrialError")
        if recorder.record_outcome(self.summary, trial, run_id, candidate, outcome) not in UNCOUNTED:
            self.driver.after_evaluated(self.summary)


def _define_candidate(trial: optuna.Trial, spec: SpaceSpec) -> None:
    """OptunaSearch's define-by-run space: the same conditional space as the Optuna backend."""
    suggest_candidate(trial, spec)


class _StopRequested(_DriverBound, Stopper):
    """Ends the Tune experiment after a stop request (first Ctrl-C) to the driver."""

    def __init__(self, driver: SearchDriver):
        self.driver = driver

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.driver.stop.is_set()


@functools.lru_cache(maxsize=2)
def _pipeline(config_json: str) -> CompressionPipeline:
    """One pipeline per actor and study (reused across trials with ``reuse_actors``)."""
    cfg = SlimsearchConfig.model_validate_json(config_json)
    task = load_task(cfg.task, cfg.search.seed)
    return CompressionPipeline(task, cfg.cache_dir, cfg.training.recipe(), cfg.search.seed,
                               cfg.evaluation.calibration_size)


def tune_trial(config: dict[str, Any], study_config: SlimsearchConfig, yardstick: Yardstick) -> None:
    """The Tune trainable: build and measure one candidate in a Ray actor, report the outcome."""
    torch.set_num_threads(study_config.search.ray.cpus_per_trial)
    monitor: TrialMonitor | None = config["monitor"]
    outcome = run_candidate(Candidate.from_dict(config["candidate"]), _pipeline(study_config.model_dump_json()),
                            study_config.evaluation, make_placement(study_config.evaluation),
                            Path(study_config.output_dir) / "artifacts-tmp" / str(os.getpid()), yardstick,
                            monitor)
    values = ({name: outcome.result.metrics[name] for name in study_config.objectives}
              if outcome.result is not None else {})
    tune.report({**values, "outcome": outcome})
