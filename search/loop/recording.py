"""Recording how a trial ended: Optuna first, then its MLflow run with the same facts.

Every ending has one path here -- complete, stopped early, rejected, failed, stopped by
the host, read on a busy host (deferred, then noisy), answered from an earlier trial,
stepping aside for a twin, lost with its worker -- so the two stores never disagree and
the driver only decides what runs next. The recorder also keeps what a trial's record
needs from before it ran (the cost predictor's prediction) and what the driver needs
to decide after it (the last skip's kind, a host fault).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.objectives import QualityMetric, accurate_enough
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.trial import TrialOutcome, busy_host
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.storage import rerun_once
from slimsearch.search.store.tracking import MlflowTracker
from slimsearch.search.store.trial_writes import tell, write_trial
from slimsearch.spaces import Candidate, follow_up_params, suggest_candidate

MAX_DEFERRALS = 2
"""Times a candidate whose latency was read on a busy host is queued to be measured again."""


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


def _rejection_key(candidate: Candidate | None) -> str:
    """What identifies a rejected proposal: its candidate, or the empty string when its
    parameters resolve to none."""
    return candidate.fingerprint() if candidate else ""


class TrialRecorder:
    def __init__(self, study: optuna.Study, tracker: MlflowTracker, config: SlimsearchConfig, quality: QualityMetric,
                 predictor: CostPredictor, staged_models: Path, console: Console, ledger: StudyLedger | None = None
                 ) -> None:
        self.study, self.tracker, self.config, self.quality = study, tracker, config, quality
        self.ledger = ledger
        """What the study measured and queued: no deployment variant repeats one."""
        self.objectives, self.constraints = list(config.objectives), config.parsed_constraints
        self.predictor, self.staged_models, self.console = predictor, staged_models, console
        self.predictions: dict[int, dict[str, tuple[float, float]] | None] = {}
        """What the cost predictor said before each running trial was built."""
        self.rejected_candidates: set[str] = set()
        """Fingerprints of candidates this process rejected (the empty string: unresolvable)."""
        self.last_skip = ""
        """Why the last proposal was not run: "rejected" or "duplicate"."""
        self.last_reason = ""
        self.host_fault = ""
        """Why the machine (not a candidate) stopped the run, e.g. a full disk; empty while it can go on."""

    def open_run(self, trial: optuna.Trial) -> str:
        """Start the trial's MLflow run and record its id with the trial, before anything long
        runs (a dead worker's run is ended from it)."""
        run_id = self.tracker.start_trial(trial.number)
        write_trial(trial, {records.MLFLOW_RUN_ID: run_id})
        return run_id

    def skip_twin(self, trial: optuna.Trial, candidate: Candidate, twin: int) -> None:
        """Step aside for a twin being measured: recorded in the study only (no MLflow run), not
        counted, and (like a repeated proposal) answered by exploring once the sampler keeps
        repeating itself."""
        self.last_skip = "duplicate"
        self.record_failure(trial, None, "concurrent", f"trial {twin} measures the same candidate now")
        self.print_trial(trial.number, candidate, f"[dim]trial {twin} measures the same candidate now: skipped[/]")

    @staticmethod
    def write_duplicate(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        """Copy what ``earlier`` measured for the same candidate into ``trial`` (inside the
        proposal's held writes, where it joins their transaction): then :meth:`answer_duplicate`."""
        copied = {key: earlier.user_attrs[key] for key in (records.METRICS, records.TAGS, records.ACCURACY_CURVE,
                                                          records.PRUNED_RULE, records.PRUNED_REASON, records.PRUNED_AT)
                  if key in earlier.user_attrs}
        complete = earlier.state == TrialState.COMPLETE
        write_trial(trial, {records.DUPLICATE_OF: earlier.number, **copied}, earlier.constraints if complete else None)

    def answer_duplicate(self, summary: RunSummary, trial: optuna.Trial, candidate: Candidate,
                         earlier: optuna.trial.FrozenTrial) -> None:
        """Tell the sampler what ``earlier`` measured (copied by :meth:`write_duplicate`); nothing
        is re-run and no MLflow run is made (the run's closing summary counts the repeats;
        ``search.remeasure: true`` re-measures instead, e.g. to study noise)."""
        self.last_skip = "duplicate"
        summary.duplicates += 1
        if earlier.state == TrialState.COMPLETE:
            tell(self.study, trial, earlier.values)
        else:
            tell(self.study, trial, state=TrialState.PRUNED)
        self.print_trial(trial.number, candidate, f"[dim]duplicate of trial {earlier.number}: answered from the "
                                                   "study, not re-measured[/]")

    def repeats_a_rejection(self, candidate: Candidate | None) -> bool:
        """The sampler learns nothing from a rejection (a failed trial), so it may propose the
        same candidate again: a repeat is a repeated proposal, not a new rejection (no MLflow
        run of its own), and repeats lead to exploring unmeasured candidates instead of ending the run."""
        return _rejection_key(candidate) in self.rejected_candidates

    def record_outcome(self, summary: RunSummary, trial: optuna.Trial, run_id: str | None, candidate: Candidate | None,
                       outcome: TrialOutcome) -> str:
        """Tell Optuna, then complete the MLflow run (if it has one) with the same facts; returns the outcome kind."""
        if outcome.kind == "rejected":
            repeat = self.repeats_a_rejection(candidate)
            self.rejected_candidates.add(_rejection_key(candidate))
            self.last_skip, self.last_reason = "duplicate" if repeat else "rejected", outcome.reason
            self.record_failure(trial, run_id, "rejected", outcome.reason)
            summary.rejected += 1
            self.print_trial(trial.number, candidate, f"[yellow]rejected[/]: {escape(outcome.reason)}")
        elif outcome.kind == "host":
            self.record_failure(trial, run_id, "host", outcome.reason)
            self.study.enqueue_trial(trial.params)  # the resumed run measures it first
            self.host_fault = (f"trial {trial.number} was stopped by the host, not by its candidate ({outcome.reason}); "
                               f"free space under {self.config.output_dir} (slimsearch cache clear frees the stage "
                               "cache) and run the same command again to resume: the trial is not counted")
            self.print_trial(trial.number, candidate, f"[red]stopped by the host[/]: {escape(outcome.reason)}")
        elif outcome.kind == "failed":
            self.record_failure(trial, run_id, "error", outcome.reason, outcome.trace)
            summary.failed += 1
            summary.failure_reasons[outcome.rule] = summary.failure_reasons.get(outcome.rule, 0) + 1
            self.print_trial(trial.number, candidate, f"[red]failed[/]: {escape(outcome.reason)}")
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
            self._record_success(trial, run_id, candidate, outcome.result, outcome.curve)
            summary.completed += 1
            self._enqueue_follow_ups(trial, outcome.result.metrics)
        return outcome.kind

    def _enqueue_follow_ups(self, trial: optuna.Trial, metrics: dict[str, float]) -> None:
        """Measure cheap follow-ups of a new model next (``search.deployment_variants``): a
        pruned student that met the accuracy constraints first gets its unpruned twin, then
        other deployments, those its cost predictor expects fastest first. Its trained stages
        are cached, so each costs a conversion and a probe, not a training run. A model that
        misses a constraint on the task's metric gets only more precise deployments: a lower
        bit width or another runtime does not recover accuracy, a higher bit width may (on
        the digits table a student that missed at int8 held the fastest deployable fp32 build)."""
        if not self.config.search.deployment_variants or records.VARIANT_OF in trial.user_attrs:
            return
        measured: dict[str, Any] = {}
        queued: set[str] = set()
        if self.ledger is not None:  # read incrementally; the index is looked up, never copied
            self.ledger.catch_up()
            measured = self.ledger.measured
            queued = {suggest_candidate(optuna.trial.FixedTrial(params), self.config.space).fingerprint()
                      for params in self.ledger.queued_params()}

        def known(variant: Candidate) -> bool:
            return variant.fingerprint() in measured or variant.fingerprint() in queued

        for params in follow_up_params(self.config.space, trial.params, self.config.search.deployment_variants,
                                       self.config.search.seed + trial.number, self.config.evaluation.batch_size,
                                       accurate=accurate_enough(self.constraints, metrics, self.quality),
                                       cost=self.predictor.latency, known=known):
            self.study.enqueue_trial(params, user_attrs={records.VARIANT_OF: trial.number})

    def _record_success(self, trial: optuna.Trial, run_id: str, candidate: Candidate, result: Any,
                        curve: dict[str, float] | None) -> None:
        metrics = result.metrics
        attrs: dict[str, Any] = {records.METRICS: metrics, records.TAGS: result.tags}
        if curve:
            attrs[records.ACCURACY_CURVE] = curve  # what later trials' stopping rules learn from
        predicted = self.predictions.pop(trial.number, None)
        if predicted:
            attrs[records.PREDICTED] = {name: value for name, (value, _) in predicted.items()}
        self.predictor.learn(candidate, metrics, predicted)
        violations = {constraint.name: constraint.violation(metrics) for constraint in self.constraints}
        feasible = all(violation <= 0 for violation in violations.values())
        write_trial(trial, attrs, violations)
        tell(self.study, trial, [metrics[name] for name in self.objectives])
        if result.artifact:
            self.staged_models.mkdir(parents=True, exist_ok=True)
            result.artifact.replace(self.staged_models / f"trial-{trial.number:04d}.ts.pt")
        self.finish_run(run_id, trial)
        shown = " ".join(f"{n}={metrics[n]:.4g}" for n in self.objectives)
        flag = "" if feasible else " [yellow](infeasible)[/]"
        sim = " [magenta]simulated[/]" if candidate.simulated else ""
        self.print_trial(trial.number, candidate, f"{shown}{flag}{sim}")

    def _record_noisy(self, summary: RunSummary, trial: optuna.Trial, run_id: str, candidate: Candidate,
                      result: Any) -> str:
        """A latency read while other work kept the cores busy is wrong, not just uncertain:
        the sampler is not told it and the front never holds it. The candidate is queued to be
        measured again (its stages are cached: a probe, not a training run), up to
        ``MAX_DEFERRALS`` times; then it fails as ``noisy`` and uses up its trial."""
        self.predictions.pop(trial.number, None)
        if result.artifact:
            result.artifact.unlink(missing_ok=True)
        m, attempt = result.metrics, int(trial.user_attrs.get(records.DEFERRALS, 0)) + 1
        write_trial(trial, {records.METRICS: m, records.TAGS: result.tags})  # kept for the record, told to no one
        busy = busy_host(m)
        if attempt <= MAX_DEFERRALS:
            self.record_failure(trial, run_id, "deferred", f"latency not recorded: {busy}; queued to be measured again")
            self.study.enqueue_trial(trial.params, user_attrs={records.DEFERRALS: attempt})
            self.print_trial(trial.number, candidate, f"[yellow]deferred[/]: {busy}; measured again next")
            return "deferred"
        reason = (f"latency not recorded: {busy} in {attempt} attempts; run when the host is quieter "
                  "or raise evaluation.max_outside_load")
        self.record_failure(trial, run_id, "noisy", reason)
        summary.failed += 1
        summary.failure_reasons["noisy"] = summary.failure_reasons.get("noisy", 0) + 1
        self.print_trial(trial.number, candidate, f"[red]not measurable[/]: {escape(reason)}")
        return "failed"

    def _record_pruned(self, trial: optuna.Trial, run_id: str, candidate: Candidate, stop: TrialOutcome) -> None:
        """PRUNED in Optuna, FINISHED in MLflow with the rule, the point and the accuracy curve."""
        write_trial(trial, {records.ACCURACY_CURVE: stop.curve, records.PRUNED_RULE: stop.rule,
                            records.PRUNED_REASON: stop.reason, records.PRUNED_AT: stop.point})
        tell(self.study, trial, state=TrialState.PRUNED)
        self.finish_run(run_id, trial)
        self.print_trial(trial.number, candidate, f"[cyan]stopped early[/] ({stop.rule}): {escape(stop.reason)}")

    def record_failure(self, trial: optuna.Trial, run_id: str | None, kind: str, reason: str,
                       trace: str | None = None) -> None:
        """Fail the trial in Optuna, then end its MLflow run (``None``: it has none, a twin)."""
        write_trial(trial, {records.FAILURE_KIND: kind, records.FAILURE_REASON: reason})
        tell(self.study, trial, state=TrialState.FAIL)
        if run_id is None:
            return
        self.finish_run(run_id, trial)
        if trace:
            self.tracker.client.log_text(run_id, trace, "failure/traceback.txt")

    def record_lost_worker(self, trial: optuna.Trial, run_id: str, candidate: Candidate, reason: str) -> None:
        """A trial whose worker process died under it (a host fault, not the candidate's):
        failed without using budget, and its parameters measured again once."""
        self.record_failure(trial, run_id, "stale", f"{reason}; the parameters were re-enqueued")
        rerun_once(self.study, self.study._storage.get_trial(trial._trial_id))  # noqa: SLF001
        self.print_trial(trial.number, candidate, f"[yellow]worker lost[/]: {escape(reason)}; measured again")

    def finish_run(self, run_id: str, trial: optuna.Trial) -> None:
        """End the trial's MLflow run with exactly what Optuna now records for it."""
        frozen = self.study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - one trial, not the whole study
        self.tracker.finish_trial(run_id, *records.TrialRecord(frozen).mlflow())

    def print_trial(self, number: int, candidate: Candidate | None, text: str) -> None:
        what = candidate.summary() if candidate else "?"
        self.console.print(f"trial {number:>4}  {what:<58} {text}")
