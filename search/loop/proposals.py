"""From the sampler's proposal to a trial worth running: repeats, twins, rejections, exploration.

A proposal the study has already measured is answered from that trial's record, one
another worker is measuring right now steps aside, and one that cannot be built or served
here is rejected before any training -- none of them uses budget. Such skips in a row mean
something: a sampler repeating measured candidates has converged on a discrete space (a
random unmeasured candidate is measured next, and when none is left the space is
exhausted); a space whose candidates are all rejected is misconfigured (the run stops and
says so). A new study can also start from another study's front (warm start).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from slimsearch.pipelines import CompressionPipeline
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.errors import SearchError
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.recording import RunSummary, TrialRecorder
from slimsearch.search.loop.trial import TrialOutcome
from slimsearch.search.store import records
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.pareto import front_trials
from slimsearch.search.store.study import load_existing_study
from slimsearch.search.store.trial_writes import write_trial, writes_held
from slimsearch.spaces import Candidate, InvalidCandidate, rejection_reason, suggest_candidate, unmeasured_params

MAX_CONSECUTIVE_REJECTIONS = 50
MAX_CONSECUTIVE_DUPLICATES = 200
EXPLORE_AFTER_DUPLICATES = 30
"""After this many proposals in a row repeated measured candidates, a random unmeasured one
is measured next (found within ``EXPLORE_DRAWS`` random draws, else the space is exhausted)."""
EXPLORE_DRAWS = 200


class ProposalGuard:
    """Decides which proposals become measured trials, and notices a stuck sampler or space."""

    def __init__(self, config: SlimsearchConfig, study: optuna.Study, ledger: StudyLedger,
                 pipeline: CompressionPipeline, recorder: TrialRecorder, predictor: CostPredictor, console: Console):
        self.config, self.study, self.ledger, self.pipeline = config, study, ledger, pipeline
        self.recorder, self.predictor, self.console = recorder, predictor, console
        self.exhausted = False
        """Every candidate of the space has been proposed: the run ends early."""
        self._rejected_in_a_row = self._duplicates_in_a_row = 0

    def admit(self, summary: RunSummary, trial: optuna.Trial, owner: dict[str, Any]) -> tuple[str, Candidate] | None:
        """The trial's MLflow run and candidate, or ``None`` when it was answered, skipped or
        rejected (and recorded so). ``owner`` (its worker) is recorded with its parameters and
        candidate, in one transaction, before other workers look for a twin. A proposal
        answered from the study, stepping aside for a twin or repeating a rejected candidate
        gets no MLflow run: late in a long study a converged sampler repeats itself dozens of
        times per new candidate, and a run for each buried the measured ones in the UI (and
        cost ~27 ms each, issue 27)."""
        candidate: Candidate | None = None
        try:
            with writes_held(trial):
                write_trial(trial, owner)
                candidate = suggest_candidate(trial, self.config.space)
                write_trial(trial, {records.CANDIDATE: candidate.to_dict(), records.SUMMARY: candidate.summary(),
                                    records.SIMULATED: candidate.simulated})
                # A repeat of what the ledger knows (caught up just before the proposal) is
                # answered in the proposal's own transaction: most proposals late in a study.
                earlier = None if self.config.search.remeasure else self.ledger.measured_trial(candidate)
                if earlier is not None:
                    self.recorder.write_duplicate(trial, earlier)
            if earlier is None and not self.config.search.remeasure:
                self.ledger.catch_up(own=trial)  # what other workers finished or started since the proposal began
                if (earlier := self.ledger.measured_trial(candidate)) is not None:
                    self.recorder.write_duplicate(trial, earlier)
            if earlier is not None:
                self.recorder.answer_duplicate(summary, trial, candidate, earlier)
                return None
            if not self.config.search.remeasure and (twin := self._measuring_now(candidate, trial.number)) is not None:
                self.recorder.skip_twin(trial, candidate, twin)
                return None
            reason = self.rejection(candidate)
        except InvalidCandidate as exc:
            reason = str(exc)
        run_id = None if reason and self.recorder.repeats_a_rejection(candidate) else self.recorder.open_run(trial)
        if not reason:
            assert run_id is not None and candidate is not None
            self.recorder.predictions[trial.number] = self.predictor.predict(candidate)
            return run_id, candidate
        self.recorder.record_outcome(summary, trial, run_id, candidate, TrialOutcome("rejected", reason=reason))
        return None

    def rejection(self, candidate: Candidate) -> str | None:
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

    def evaluated(self) -> None:
        """A trial was measured: the streaks of skipped proposals are over."""
        self._rejected_in_a_row = self._duplicates_in_a_row = 0

    def check_rejections(self) -> None:
        """After a skipped proposal: stop a search whose space yields nothing this host can
        build or serve, or whose sampler only proposes candidates already measured."""
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
                                   EXPLORE_DRAWS, lambda candidate: not self.rejection(candidate))
        if params is None:
            self.exhausted = True
            return
        self.study.enqueue_trial(params, user_attrs={records.EXPLORES: self._duplicates_in_a_row})
        self.console.print(f"{self._duplicates_in_a_row} proposals in a row repeated measured candidates: "
                           "a random unmeasured one is measured next")


def warm_start_params(config: SlimsearchConfig, source: str | None, console: Console) -> list[dict[str, Any]]:
    """The front of study ``source`` (same storage) as params of this space: what worked for
    the previous model of the family is measured first. Candidates this space cannot express
    are left out, and said so."""
    if source is None:
        return []
    front = front_trials(load_existing_study(config.storage_url, source))
    params, skipped = [], 0
    for trial in front:
        try:
            suggest_candidate(optuna.trial.FixedTrial(trial.params), config.space)
            params.append(dict(trial.params))
        except ValueError:  # a parameter or choice this space does not have
            skipped += 1
    console.print(f"warm start: {len(params)} front candidates of study '{source}' enqueued"
                  + (f" ({skipped} not in this space)" if skipped else ""))
    return params
