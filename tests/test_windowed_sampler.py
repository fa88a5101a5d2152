"""The sampler's bounded history: Optuna's TPE below the window, flat reads above it."""

from __future__ import annotations

import math
import pickle

import optuna
from optuna.trial import TrialState

from slimsearch.search.store.windowed_sampler import WindowedTPESampler


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    """A small conditional, constrained two-objective problem (like a student / no student space)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.suggest_categorical("student", [True, False]):
        x *= trial.suggest_categorical("width", [0.25, 0.5, 1.0])
    trial.set_user_attr("constraint", [x - 0.8])
    return x, (1 - x) ** 2 + trial.suggest_int("bits", 4, 8) / 10


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs["constraint"]


def _proposals(sampler: optuna.samplers.BaseSampler, trials: int) -> list[dict]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_objective, n_trials=trials)
    return [t.params for t in study.trials]


def test_below_its_window_the_sampler_proposes_exactly_what_optunas_tpe_proposes() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = _proposals(optuna.samplers.TPESampler(seed=3, constraints_func=_constraints), 40)
    windowed = _proposals(WindowedTPESampler(seed=3, constraints_func=_constraints), 40)
    assert windowed == plain


def test_above_its_window_the_sampler_sees_the_front_and_the_latest_trials_only() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = WindowedTPESampler(recent=10, seed=0, n_startup_trials=5)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen: list[int] = []
    original = optuna.samplers.TPESampler.sample_independent

    def spy(self, view, trial, name, distribution):  # noqa: ANN001 - Optuna's signature
        seen[:] = [t.number for t in view._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        return original(self, view, trial, name, distribution)

    optuna.samplers.TPESampler.sample_independent = spy
    try:
        study.optimize(_objective, n_trials=60)
    finally:
        optuna.samplers.TPESampler.sample_independent = original
    front = {t.number for t in study.best_trials}
    assert set(seen) == front | set(range(49, 59)), "the front and the 10 trials before the last one"
    assert len(seen) < 59
    assert pickle.loads(pickle.dumps(sampler)).ledger is None, "pickled without the live study"


def test_one_proposal_splits_its_history_once_for_all_its_parameters(monkeypatch) -> None:  # noqa: ANN001
    from slimsearch.search.store import windowed_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=WindowedTPESampler(seed=0, n_startup_trials=5, constraints_func=_constraints))
    study.optimize(_objective, n_trials=10)
    splits: list[int] = []
    original = windowed_sampler._optunas_split

    def counted(*args):  # noqa: ANN002, ANN202 - Optuna's private signature
        splits.append(1)
        return original(*args)

    monkeypatch.setattr(windowed_sampler, "_optunas_split", counted)
    study.optimize(_objective, n_trials=1)
    sampled = len(study.trials[-1].params)
    assert sampled >= 3 and len(splits) == 1, f"{len(splits)} splits for {sampled} parameters"


def test_good_share_splits_the_history_as_optunas_gamma_would_and_pickles() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = _proposals(optuna.samplers.TPESampler(seed=3, constraints_func=_constraints,
                                                  gamma=lambda n: min(math.ceil(0.25 * n), 25)), 40)
    shared = WindowedTPESampler(seed=3, constraints_func=_constraints, good_share=0.25)
    assert _proposals(shared, 40) == plain
    assert plain != _proposals(WindowedTPESampler(seed=3, constraints_func=_constraints), 40), "the share matters"
    assert pickle.loads(pickle.dumps(shared))._gamma(40) == 10
    assert shared._gamma(400) == 25, "capped as Optuna's single-objective default"
