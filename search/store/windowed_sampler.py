"""TPE that learns from a bounded history, so proposing costs the same at trial 100 and 10,000.

Optuna's TPE reads and splits every finished trial once per parameter it samples; in an
overnight study of thousands of trials that outgrew the trials themselves. This sampler
shows TPE the study through a window instead: the front (the best points of the whole
study, which TPE's "good" group is drawn from) and the latest
:data:`~.ledger.RECENT_TRIALS` complete or stopped trials (its picture of the rest),
caught up once per proposal by a :class:`~.ledger.StudyLedger`. Below that many trials
the window is the whole study, so small studies are sampled exactly as by Optuna's TPE.

TPE (independent, the default) also splits its history into good and bad trials once per
*parameter*, though the split does not depend on the parameter: at 10,000 trials that was
most of a proposal's sampling time (a profile: 5 splits of the 1,000-trial window per
proposal). One split per proposal is kept and reused for its other parameters
(:func:`_split_once_per_proposal`), and each finished trial's parameters are converted to
TPE's internal numbers once, not at every proposal (:meth:`WindowedTPESampler._get_internal_repr`);
the proposals are the same as Optuna's.

``good_share`` sets how much of the history TPE counts as good (Optuna's multi-objective
default: a tenth, 4 trials at trial 40), at most :data:`GOOD_GROUP_CAP` trials as in
Optuna's single-objective default. The history includes repeated proposals answered from
the study, so the cap can bind well before 100 measured candidates. Optuna deprecated
its ``gamma`` argument, which did this, so the sampler sets the same split size itself.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Container

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as tpe_module
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.store.ledger import RECENT_TRIALS, StudyLedger


class TrialWindow:
    """The study as the sampler sees it during one proposal: the same study, whose trial
    reads answer from the window and the running trials as the ledger last read them (a
    constant-liar TPE, the multi-objective default, counts those as pending)."""

    def __init__(self, study: optuna.Study, window: list[FrozenTrial], running: list[FrozenTrial]):
        self._study = study
        self._window = window
        self._running = running

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        chosen = [t for t in self._window if states is None or t.state in states]
        if states is None or TrialState.RUNNING in states:
            chosen += self._running
        return chosen

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)


_UNCONVERTED = object()
_optunas_split = tpe_module._split_trials  # noqa: SLF001 - Optuna 5 is pinned
_proposal = threading.local()
"""The splits of the proposal being sampled on this thread (``splits``: ``n_below`` -> split),
set only while a :class:`WindowedTPESampler` samples: any other TPE splits as Optuna does."""


def _split_once_per_proposal(study: optuna.Study, trials: list[FrozenTrial], n_below: int
                             ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    splits: dict[int, tuple[list[FrozenTrial], list[FrozenTrial]]] | None = getattr(_proposal, "splits", None)
    if splits is None:
        return _optunas_split(study, trials, n_below)
    if n_below not in splits:
        splits[n_below] = _optunas_split(study, trials, n_below)
    return splits[n_below]


tpe_module._split_trials = _split_once_per_proposal  # noqa: SLF001


GOOD_GROUP_CAP = 25


def good_group_size(share: float, finished: int) -> int:
    """How many of ``finished`` trials TPE's good density is drawn from."""
    return min(math.ceil(share * finished), GOOD_GROUP_CAP)


class WindowedTPESampler(TPESampler):
    """Optuna's TPE (its arguments and ``good_share``) over the front and the latest ``recent`` trials of the study."""

    def __init__(self, recent: int = RECENT_TRIALS, good_share: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.recent = recent
        if good_share is not None:  # picklable (Ray Tune checkpoints its searcher), unlike a lambda
            self._gamma = functools.partial(good_group_size, good_share)
        self.ledger: StudyLedger | None = None
        """The running search's ledger when it shares it (:meth:`follow`); else one of its own."""
        self._window: tuple[int, TrialWindow] | None = None
        self._following = False
        self._splits: tuple[int, dict[int, Any]] | None = None
        """The trial being proposed and its history's splits (the same window for every parameter)."""
        self._internal: dict[tuple[Any, ...], dict[int, tuple[float, ...] | None]] = {}
        """(study, search space) -> finished trial id -> its parameters as TPE's internal numbers
        (``None``: it lacks one of them)."""

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Ray Tune checkpoints its searcher) without the live study behind the ledger."""
        return {**self.__dict__, "ledger": None, "_window": None, "_following": False, "_splits": None, "_internal": {}}

    def follow(self, ledger: StudyLedger) -> None:
        """Take the history from ``ledger``, which its owner (the driver) keeps caught up before
        each proposal, instead of folding and reading the study a second time."""
        self.ledger = ledger
        self._following = True

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return super().sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)

    def _sample(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
                ) -> dict[str, Any]:
        if self._splits is None or self._splits[0] != trial._trial_id:  # noqa: SLF001
            self._splits = (trial._trial_id, {})  # noqa: SLF001
        _proposal.splits = self._splits[1]
        try:
            return super()._sample(study, trial, search_space)
        finally:
            _proposal.splits = None

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: optuna.Study) -> dict[str, np.ndarray]:
        """Optuna's conversion (the same arrays), each finished trial's numbers remembered: it
        converted every trial of the window for every parameter of every proposal, ~8 ms of a
        proposal's ~28 ms at 10,000 trials. A finished trial's parameters never change."""
        known = self._internal.setdefault((study._study_id, *search_space.items()), {})  # noqa: SLF001
        if len(known) > 4 * max(self.recent, len(trials)):
            known.clear()  # trials long out of the window
        rows = [known.get(trial._trial_id, _UNCONVERTED) for trial in trials]  # noqa: SLF001 - only finished ones are known
        for index, row in enumerate(rows):
            if row is _UNCONVERTED:
                trial, params = trials[index], self._get_params(trials[index], study)
                rows[index] = row = (tuple(d.to_internal_repr(params[name]) for name, d in search_space.items())
                                     if search_space.keys() <= params.keys() else None)
                if trial.state.is_finished():
                    known[trial._trial_id] = row  # noqa: SLF001
        rows = [row for row in rows if row is not None]
        columns = zip(*rows) if rows else ([] for _ in search_space)
        return {name: np.asarray(column) for name, column in zip(search_space, columns)}

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
        """One window per proposal: every parameter of a trial is sampled from the same history."""
        if self._window is None or self._window[0] != trial._trial_id:  # noqa: SLF001
            if self.ledger is None or self.ledger.study._study_id != study._study_id:  # noqa: SLF001
                self.ledger, self._following = StudyLedger(study, recent=self.recent), False
            if not self._following:
                self.ledger.catch_up()
            window = TrialWindow(study, self.ledger.history(), self.ledger.running())
            self._window = (trial._trial_id, window)  # noqa: SLF001
        return self._window[1]  # type: ignore[return-value] - a stand-in for the study
