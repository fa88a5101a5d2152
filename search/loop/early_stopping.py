"""Multi-objective early stopping: stop trials that can no longer reach the front.

Optuna's pruners do not support multi-objective studies (``trial.report`` raises), so
the search stops trials itself. While a candidate trains, the pipeline reports its
validation metric (the task's: accuracy unless it names another; a minimised metric is
handled on a negated, higher-is-better score) after every epoch (``"distill 3/10"``, ``"finetune 1/3"``), and the
trial reports the serving artifact's exact accuracy (``"serving"``) before latency and
memory are measured. The *optimistic* final accuracy at a point is the reported accuracy
plus the largest gain from that point to the final accuracy seen in the study's completed
trials, plus a slack; until ``min_history`` completed trials passed the same point,
nothing is stopped there (the exact serving accuracy needs no history).

Two rules; the one that fired is recorded on the pruned trial:

- ``accuracy-constraint``: even the optimistic accuracy misses an accuracy constraint.
- ``dominated``: the trial's best case — optimistic accuracy with the latency/memory
  already measured in this study for the same serving structure (distillation settings
  change weights, not speed) — is dominated by the current front.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.config import EarlyStoppingSettings
from slimsearch.search.objectives import Constraint, QualityMetric, best_of, minimising_signs
from slimsearch.spaces import Candidate
from slimsearch.search.store import records

SERVING_POINT = "serving"


class TrialStopped(Exception):
    """The trial cannot pay off; ``rule`` names the rule, the message the evidence."""

    def __init__(self, rule: str, point: str, message: str):
        super().__init__(rule, point, message)  # all args, so the exception pickles (Ray actors)
        self.rule = rule
        self.point = point
        self.message = message

    def __str__(self) -> str:
        return self.message


def required_score(constraints: list[Constraint], quality: QualityMetric, teacher: float) -> float | None:
    """The lowest score (:meth:`QualityMetric.score`: the metric, negated when minimised)
    every constraint on the task's metric allows (None: unconstrained)."""
    bounds = [quality.score(c.bound) for c in constraints
              if c.metric == quality.name and c.op == (">=" if quality.direction == "maximize" else "<=")]
    bounds += [quality.score(teacher) - c.bound for c in constraints if c.metric == quality.drop and c.op == "<="]
    return max(bounds) if bounds else None


@dataclass
class StudyHistory:
    """What completed trials tell about a new one: per reported point, how many trials passed
    it and the largest gain after it; the best objective values per serving structure; the
    front. Kept as aggregates, so what a monitor carries (to a Ray actor too) does not grow
    with the study."""

    gains: dict[str, tuple[int, float]] = field(default_factory=dict)
    known: dict[str, dict[str, float]] = field(default_factory=dict)
    front: list[list[float]] = field(default_factory=list)


class EarlyStopping:
    """The rules of one study and what its completed trials taught (:meth:`learn`, once per
    trial); :meth:`for_trial` gives the monitor one trial reports to."""

    def __init__(self, settings: EarlyStoppingSettings, objectives: dict[str, str], constraints: list[Constraint],
                 quality: QualityMetric, teacher: float):
        self.settings = settings
        self.objectives = objectives
        self.quality = quality
        self.required = required_score(constraints, quality, teacher)
        self.history = StudyHistory()

    def learn(self, trial: FrozenTrial) -> None:
        """Fold in a finished trial; gains are on the score scale (higher is better, whatever
        the metric's direction)."""
        if trial.state != TrialState.COMPLETE or records.DUPLICATE_OF in trial.user_attrs:
            return  # a duplicate's curve is the original's: counting it twice would skew the gains
        final = trial.user_attrs.get(records.METRICS, {}).get(self.quality.name)
        for point, value in trial.user_attrs.get(records.ACCURACY_CURVE, {}).items():
            if final is not None:
                gain = self.quality.score(final) - self.quality.score(value)
                count, largest = self.history.gains.get(point, (0, gain))
                self.history.gains[point] = (count + 1, max(largest, gain))
        if records.CANDIDATE not in trial.user_attrs:
            return
        key = Candidate.from_dict(trial.user_attrs[records.CANDIDATE]).serving_key()
        best = self.history.known.setdefault(key, {})
        for name, value in zip(self.objectives, trial.values):
            best[name] = best_of(self.objectives[name])(best.get(name, value), value)

    def for_trial(self, front: list[FrozenTrial], candidate: Candidate) -> TrialMonitor:
        """A monitor judged against the history so far and ``front`` (a snapshot: what it
        carries is this candidate's serving structure, not the study)."""
        key = candidate.serving_key()
        snapshot = StudyHistory(dict(self.history.gains), {key: dict(self.history.known.get(key, {}))},
                                [list(t.values) for t in front])
        return TrialMonitor(self, snapshot, key)


class TrialMonitor:
    """Collects one trial's curve of the task's metric and raises :class:`TrialStopped` when a rule fires."""

    def __init__(self, rules: EarlyStopping, history: StudyHistory, serving_key: str):
        self.rules = rules
        self.history = history
        self.serving_key = serving_key
        self.curve: dict[str, float] = {}

    def __call__(self, point: str, value: float) -> None:
        self.curve[point] = value
        quality = self.rules.quality
        optimistic = self._optimistic(point, quality.score(value))
        if optimistic is None:
            return
        required = self.rules.required
        if required is not None and optimistic < required:
            raise TrialStopped("accuracy-constraint", point, f"{quality.name} {value:.4f} at {point} can reach at best "
                               f"{quality.score(optimistic):.4f}, the constraints need "
                               f"{'>=' if quality.direction == 'maximize' else '<='} {quality.score(required):.4f}")
        best_case = self._best_case(quality.score(optimistic))
        if best_case is not None and any(_dominates(q, best_case, self._signs) for q in self.history.front):
            raise TrialStopped("dominated", point, f"{quality.name} {value:.4f} at {point}: even its best case "
                               f"{json.dumps(dict(zip(self.rules.objectives, best_case)))} is dominated by the front")

    @property
    def _signs(self) -> list[float]:
        return minimising_signs(self.rules.objectives.values())

    def _optimistic(self, point: str, score: float) -> float | None:
        if point == SERVING_POINT:
            return score
        count, largest = self.history.gains.get(point, (0, 0.0))
        if count < self.rules.settings.min_history:
            return None
        return score + max(largest, 0.0) + self.rules.settings.slack

    def _best_case(self, optimistic_value: float) -> list[float] | None:
        """Objective values at best, or None when some objective is not known yet."""
        known = self.history.known.get(self.serving_key, {})
        values = []
        for name in self.rules.objectives:
            value = optimistic_value if name == self.rules.quality.name else known.get(name)
            if value is None:
                return None
            values.append(value)
        return values


def _dominates(q: list[float], p: list[float], signs: list[float]) -> bool:
    qs, ps = [s * v for s, v in zip(signs, q)], [s * v for s, v in zip(signs, p)]
    return all(a <= b for a, b in zip(qs, ps)) and any(a < b for a, b in zip(qs, ps))
