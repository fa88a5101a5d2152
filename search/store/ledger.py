"""What the study has measured, kept up to date trial by trial instead of re-read.

An overnight study reaches thousands of trials; re-deriving the front (``best_trials``
deep-copies every trial), the duplicate index (a JSON parse and hash per stored trial)
and the early-stopping history from scratch after each trial made the orchestrator's
own work outgrow the trials. A finished trial never changes, and a trial dominated now
is dominated for ever, so :class:`StudyLedger` folds each finished trial in once --
this process's and every other worker's, found by number -- and keeps:

- the measured Pareto front (feasible, non-duplicate, non-dominated; equal to Optuna's
  ``best_trials`` minus duplicates), updated in O(front) per trial;
- a candidate fingerprint -> measuring trial index, for repeated proposals;
- the most recent measured trials, the sampler's bounded history (with the front).

Catching up reads the whole study once, then only the trials that can have changed (the
unfinished ones and newer numbers); the per-trial work does not grow with the study.
A running search also stores a small :meth:`~StudyLedger.snapshot` in the study, so the
read commands (``status``, ``front``) start from it and read only the front and the
trials newer than it -- exact even when the snapshot is old (a finished trial never
changes, a dominated one stays dominated), and in a second at 10,000 trials.
"""

from __future__ import annotations

import contextlib
from collections import Counter, deque
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.objectives import minimising_signs
from slimsearch.search.store import records
from slimsearch.spaces import Candidate

RECENT_TRIALS = 1000
"""How many of the latest complete or stopped trials :meth:`StudyLedger.history` keeps."""
SNAPSHOT_ATTR = "ledger"
"""Study attribute holding the latest :meth:`StudyLedger.snapshot` a search wrote."""


def dominates(a: list[float], b: list[float]) -> bool:
    """``a`` dominates ``b`` in minimisation space: no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def read_numbers(study: optuna.Study, numbers: list[int]) -> dict[int, FrozenTrial]:
    """These trials of ``study`` by number, read one by one (not the whole study)."""
    storage, study_id = study._storage, study._study_id  # noqa: SLF001 - reads by number
    return {n: storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, n)) for n in numbers}


class StudyLedger:
    """The front and the measured-candidate index of one study, caught up on demand."""

    def __init__(self, study: optuna.Study, on_new: Callable[[FrozenTrial], None] | None = None,
                 recent: int = RECENT_TRIALS):
        self.study = study
        self.on_new = on_new
        """Called once per newly seen finished trial (e.g. the early-stopping history)."""
        self.signs = minimising_signs(d.name.lower() for d in study.directions)
        self.seen_trials: dict[int, FrozenTrial] = {}
        """Every finished trial folded in, by number (references to the storage's cached trials)."""
        self.front: dict[int, FrozenTrial] = {}
        self.measured: dict[str, FrozenTrial] = {}
        """Candidate fingerprint -> the trial that measured (or stopped early) it."""
        self.proposed: set[str] = set()
        """Fingerprints of every finished trial's candidate, rejected and repeated ones too."""
        self.evaluated = 0
        """Finished trials that used up budget (:func:`records.uses_budget`)."""
        self.outcomes: Counter[str] = Counter()
        """Finished trials by :func:`records.outcome` (``COMPLETE``, ``FAIL (error)``, ...)."""
        self.recent: deque[FrozenTrial] = deque(maxlen=recent)
        """The latest complete or stopped trials, in the order they were folded in."""
        self.unfinished: dict[int, FrozenTrial] = {}
        """Running and waiting trials as last read, by number: read again at each catch-up."""
        self.next_number = 0
        """The lowest trial number not read yet (0: the study was never read)."""

    def catch_up(self, own: optuna.Trial | None = None) -> list[FrozenTrial]:
        """Fold in the trials that finished since the last call; returns them, oldest first.

        The first call reads the study once; later ones read only what can have changed --
        the trials unfinished last time and any newer trial numbers -- so a call costs the
        same at trial 100 and at trial 50,000 (a full read re-sorts every cached trial).
        ``own``: a running trial of this process, taken as it is instead of read back (a
        read of a running trial goes to the database: ~3 ms of every proposal)."""
        fresh = self._read_all() if not self.next_number else self._read_changed(own)
        for trial in fresh:
            self.seen_trials[trial.number] = trial
            self._fold(trial)
            if self.on_new is not None:
                self.on_new(trial)
        return fresh

    def snapshot(self) -> dict[str, Any]:
        """The counts, the front and where reading stopped, small enough to store in the study
        after every trial (front-sized), for :meth:`for_reading`."""
        return {"next_number": self.next_number, "unfinished": sorted(self.unfinished), "front": sorted(self.front),
                "evaluated": self.evaluated, "outcomes": dict(self.outcomes)}

    @classmethod
    def for_reading(cls, study: optuna.Study) -> StudyLedger:
        """A caught-up ledger for the read commands: the counts, the front and the running
        trials only (no candidate index, no sampler history), started from the snapshot a
        search stored, so it reads the front members and the newer trials instead of all."""
        ledger = cls(study, recent=0)
        stored = study.user_attrs.get(SNAPSHOT_ATTR)
        if stored:
            by_number = read_numbers(study, [*stored["front"], *stored["unfinished"]])
            ledger.front = {n: by_number[n] for n in stored["front"]}
            ledger.unfinished = {n: by_number[n] for n in stored["unfinished"]}
            ledger.next_number, ledger.evaluated = stored["next_number"], stored["evaluated"]
            ledger.outcomes.update(stored["outcomes"])
        ledger.catch_up()
        return ledger

    def _read_all(self) -> list[FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False)
        self.next_number = 1 + max((t.number for t in trials), default=-1)
        self.unfinished = {t.number: t for t in trials if not t.state.is_finished()}
        return [t for t in trials if t.state.is_finished() and t.number not in self.seen_trials]

    def _read_changed(self, own: optuna.Trial | None) -> list[FrozenTrial]:
        storage, study_id = self.study._storage, self.study._study_id  # noqa: SLF001 - reads by id and number
        changed = [storage.get_trial(t._trial_id) for t in self.unfinished.values()]  # noqa: SLF001
        while True:  # trial numbers are dense: the first missing one is the end
            if own is not None and own.number == self.next_number:
                changed.append(own._cached_frozen_trial)  # noqa: SLF001 - Optuna's running copy of it
                self.next_number += 1
                continue
            try:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.next_number)
            except KeyError:
                break
            changed.append(storage.get_trial(trial_id))
            self.next_number += 1
        self.unfinished = {t.number: t for t in changed if not t.state.is_finished()}
        return sorted((t for t in changed if t.state.is_finished()), key=lambda t: t.number)

    def trial_count(self) -> int:
        """Every trial of the study as of the last :meth:`catch_up`, finished or not."""
        return sum(self.outcomes.values()) + len(self.unfinished)

    def queued_params(self) -> list[dict[str, Any]]:
        """The parameters of the trials waiting in the queue as of the last :meth:`catch_up`
        (anchors, deployment variants, a stale trial's re-run)."""
        return [dict(t.system_attrs.get("fixed_params", {})) for t in self.unfinished.values()
                if t.state == TrialState.WAITING]

    def pop_waiting(self) -> int | None:
        """Claim the oldest queued trial as of the last :meth:`catch_up` (its id), or ``None``:
        Optuna's ``ask`` does it by filtering every cached trial of the study by state, ~7 ms
        of each proposal at 10,000 trials and growing; the ledger already holds the
        unfinished ones. Another worker may claim a trial first (its state write fails): the
        next one is tried, as Optuna does. Installed as the driver study's
        ``_pop_waiting_trial_id`` (``session.py``), so ``ask`` is Optuna's otherwise."""
        storage = self.study._storage  # noqa: SLF001 - Optuna's ask claims it the same way
        for trial in sorted(self.unfinished.values(), key=lambda t: t.number):
            if trial.state != TrialState.WAITING:
                continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):  # noqa: SLF001
                    return trial._trial_id  # noqa: SLF001
        return None

    def running(self) -> list[FrozenTrial]:
        """The trials running as of the last :meth:`catch_up` (any worker's), by number."""
        return sorted((t for t in self.unfinished.values() if t.state == TrialState.RUNNING), key=lambda t: t.number)

    def _fold(self, trial: FrozenTrial) -> None:
        stored = trial.user_attrs.get(records.CANDIDATE)
        fingerprint = Candidate.from_dict(stored).fingerprint() if stored else None
        if fingerprint:
            self.proposed.add(fingerprint)
        self.evaluated += records.uses_budget(trial)
        self.outcomes[records.outcome(trial)] += 1
        if trial.state != TrialState.FAIL:
            self.recent.append(trial)
        if trial.state == TrialState.FAIL or records.is_duplicate(trial):
            return
        if fingerprint:
            self.measured.setdefault(fingerprint, trial)
        # Feasible as Optuna judges it: every constraint <= 0 (a trial told without constraints is).
        if trial.state != TrialState.COMPLETE or not all(v <= 0 for v in trial.constraints.values()):
            return
        point = self._point(trial)
        if any(dominates(self._point(member), point) for member in self.front.values()):
            return
        for number in [n for n, member in self.front.items() if dominates(point, self._point(member))]:
            del self.front[number]
        self.front[trial.number] = trial

    def _point(self, trial: FrozenTrial) -> list[float]:
        return [sign * value for sign, value in zip(self.signs, trial.values)]

    def front_trials(self) -> list[FrozenTrial]:
        """The measured front, by trial number (call :meth:`catch_up` first for the latest)."""
        return [self.front[number] for number in sorted(self.front)]

    def history(self) -> list[FrozenTrial]:
        """What a sampler needs to learn from, of bounded size: the front (the best trials
        of the whole study) and the latest complete or stopped trials, by number."""
        chosen = {t.number: t for t in self.recent} | self.front
        return [chosen[number] for number in sorted(chosen)]

    def measured_trial(self, candidate: Candidate) -> FrozenTrial | None:
        """The trial that measured (or stopped early) ``candidate``, if any (call
        :meth:`catch_up` first to see other workers' trials)."""
        return self.measured.get(candidate.fingerprint())
