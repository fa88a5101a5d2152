"""Search quality: samplers replayed on a measured table of every candidate of a space.

The table (``benchmarks/tables/<task>.csv``, measured once by ``measure_table.py`` with
the real driver) holds each candidate's objectives, constraint values and the seconds its
build and measurement cost. A replay asks a sampler for candidates exactly as a search
does (``suggest_candidate`` on the table's space, the anchor trials first, a repeated
proposal answered from the study and not counted, a random unmeasured candidate after
30 repeats in a row, as the driver does) and tells it the table's measurements. So
every figure here is made of measurements.

What a replay is judged by -- checkpoints, three seed sets, the regret and hypervolume
metrics, bootstrap intervals -- is the pre-registered yardstick of ``yardstick.py``.
Two baselines: Optuna's RandomSampler (``random``; it spends half its draws on the
teacher branch of the conditional space) and ``uniform``, a seeded random order of the
table's candidates after the anchors: the stronger one, and the one the default sampler
is judged against. A replay's simulated clock adds each evaluated candidate's
measurement seconds, the training stages it needs that this replay has not built yet
(a student is trained once, its pruned variants once each) and the sampler's own
seconds, so a sampler that re-uses built models is credited and a slow one charged.

    .venv/bin/python benchmarks/search_quality.py                       # digits: uniform, random, the default
    .venv/bin/python benchmarks/search_quality.py --table benchmarks/tables/digits-transformer.csv
    .venv/bin/python benchmarks/search_quality.py --sampler tpe-mv --seed-set A --json
    .venv/bin/python benchmarks/search_quality.py --sampler tpe --good-share 0.25   # TPE's good group: a quarter
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.optimize import nnls

from slimsearch.search.config import CALIBRATE_FROM_TRIALS, SearchSettings
from slimsearch.search.loop.calibration import calibration_candidates
from slimsearch.search.loop.proposals import EXPLORE_AFTER_DUPLICATES, EXPLORE_DRAWS
from slimsearch.search.loop.predictor import PREDICTED, CostPredictor
from slimsearch.search.objectives import LATENCY_P50_MS, MACS, PARAMS, Constraint, QualityMetric, accurate_enough
from slimsearch.search.store.study import SAMPLERS
from slimsearch.search.store.windowed_sampler import WindowedTPESampler
from slimsearch.spaces import Candidate, SpaceSpec, anchor_params, follow_up_params, suggest_candidate, unmeasured_params

from common import cell, goal, provenance
from yardstick import (CHECKPOINTS, EQUAL_TIME_AT, METRICS, Interval, Outcome, Yardstick,
                       median_interval, ratio_interval, seed_sets)

TABLES = Path(__file__).resolve().parent / "tables"
BASELINE = "uniform"
BATCH = 64  # the evaluation batch size the tables were measured at
MAX_PROPOSALS = 20  # per evaluated trial: a sampler stuck on measured candidates ends its replay
REGRET_GOAL = 0.5
"""The default sampler's median latency regret, as a share of the uniform baseline's."""


@dataclass(frozen=True)
class Row:
    params: dict[str, object]
    metrics: dict[str, float]
    values: tuple[float, ...]
    constraints: dict[str, float]
    measure_s: float
    """Seconds of the trial that every evaluation pays (quantize, export, accuracy, probe)."""
    stages: tuple[tuple[str, float], ...]
    """(stage key, seconds to build it when missing) for the cached training stages it needs."""

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.values, self.feasible)


@dataclass
class Table:
    space: SpaceSpec
    objectives: list[str]
    directions: list[str]
    rows: dict[str, Row]
    candidates: int
    provenance: str
    measuring_hours: float
    study_reference: list[float]
    """The reference point the table's own study logged (accuracy 0, twice the teacher's costs)."""
    retest: dict[str, object] | None
    """Second idle measurements of clean rows (``measure_table.py --retest``): the noise floor."""

    @classmethod
    def load(cls, path: Path) -> Table:
        meta = json.loads(path.with_suffix(".json").read_text())
        space = SpaceSpec.model_validate(meta["space"])
        objectives = list(meta["objectives"])
        raw = list(csv.DictReader(path.open()))
        complete = [r for r in raw if r["state"] == "COMPLETE"]
        # The constraints the table was measured under, applied to each row's metrics here
        # (a table written before this recorded no per-row violations).
        constraints = [Constraint.parse(text) for text in meta["constraints"]]
        first_build: dict[str, float] = {}  # a training stage costs what it took when the table first built it
        for r in complete:
            for stage in ("distill", "prune_finetune"):
                key = _stage_key(json.loads(r["params"]), stage)
                if key and r[f"cache_hit_{stage}"] == "false":
                    first_build[key] = float(r[f"seconds_{stage}"])
        rows = {}
        for r in complete:
            params = json.loads(r["params"])
            stages = tuple((key, first_build.get(key, 0.0)) for stage in ("distill", "prune_finetune")
                           if (key := _stage_key(params, stage)))
            trained = sum(float(r[f"seconds_{s}"] or 0) for s in ("distill", "prune_finetune"))
            measured = {c.metric: float(r[c.metric]) for c in constraints}
            metrics = {**{name: float(r[name]) for name in PREDICTED}, MACS: float(r["macs"]),
                       PARAMS: float(r["params_count"]), **measured}
            # Keyed by the candidate this code resolves from the stored params (a fingerprint
            # written by an older version may hash fields differently).
            fingerprint = suggest_candidate(optuna.trial.FixedTrial(params), space).fingerprint()
            rows[fingerprint] = Row(params, metrics, tuple(float(r[o]) for o in objectives),
                                    {c.name: c.violation(measured) for c in constraints},
                                    float(r["seconds_trial"]) - trained, stages)
        return cls(space, objectives, meta["directions"], rows, meta["candidates"], meta["measured"],
                   meta["measuring_hours"], list(meta["reference_point"]), meta.get("retest"))

    def structure(self, candidate: Candidate) -> tuple[float, float]:
        """The MACs and parameters the table measured for ``candidate``'s model: what the
        pipeline estimates before building it (the same pruned shapes)."""
        metrics = self.rows[candidate.fingerprint()].metrics
        return metrics[MACS], metrics[PARAMS]

    def calibration(self) -> list[tuple[Candidate, Row]]:
        """The deployment calibration a search of this table takes before its first trial, as
        rows of the table: the baseline (the teacher at torch fp32, most threads), then
        each of ``calibration_candidates``. The product times its smallest model untrained;
        the table holds it trained, with other distillation settings -- the same shapes and
        kernels, so the same speed. A calibration model the table lacks is left out."""
        baseline = Candidate(None, 0.0, 32, None, "single", 1, max(self.space.parallel.threads))
        by_shape = {_shape(suggest_candidate(optuna.trial.FixedTrial(row.params), self.space)): row
                    for row in self.rows.values()}
        probes = [c for c in calibration_candidates(self.space, baseline.threads) if _shape(c) != _shape(baseline)]
        return [(candidate, by_shape[_shape(candidate)]) for candidate in [baseline, *probes]
                if _shape(candidate) in by_shape]

    def yardstick(self) -> Yardstick:
        return Yardstick.of_table([r.outcome for r in self.rows.values()], self.objectives, self.directions,
                                  self.study_reference)


def _shape(candidate: Candidate) -> tuple[object, ...]:
    """What fixes a candidate's speed: its architecture, pruning and deployment, not how it was trained."""
    student = candidate.student
    return (None if student is None else (student.width, student.depth, student.init), candidate.prune_ratio,
            candidate.rank_ratio, candidate.runtime, candidate.bits, candidate.float_dtype, candidate.strategy,
            candidate.degree, candidate.threads, candidate.qat)


def _stage_key(params: dict[str, object], stage: str) -> str | None:
    """Which cached training stage a candidate needs (None: it needs no training there)."""
    student = params.get("student") == "distilled"
    student_key = json.dumps({k: v for k, v in sorted(params.items()) if k.startswith("student")})
    if stage == "distill":
        return student_key if student else None
    ratio = float(params.get("prune.ratio", 0.0))
    if not ratio:
        return None
    return student_key + json.dumps({k: v for k, v in sorted(params.items()) if k.startswith("prune")})


@dataclass
class Trace:
    """What one replay evaluated, in order, and its simulated clock."""

    outcomes: list[Outcome] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)
    """Simulated seconds when each evaluated candidate was done."""
    proposal_s: list[tuple[int, float]] = field(default_factory=list)
    """(candidates evaluated so far, the sampler's seconds) of every proposal."""
    built: set[str] = field(default_factory=set)
    elapsed: float = 0.0
    latency_errors: list[tuple[int, float]] = field(default_factory=list)
    """(candidates evaluated before it, |predicted / measured - 1|) of each candidate whose
    latency p50 the replay's cost predictor predicted before it was measured: the predictor
    judged in the order a search of this sampler measures, where it is used."""

    def evaluate(self, row: Row, sampler_s: float = 0.0) -> None:
        self.elapsed += sampler_s + row.measure_s + sum(cost for key, cost in row.stages if key not in self.built)
        self.built.update(key for key, _ in row.stages)
        self.outcomes.append(row.outcome)
        self.clock.append(self.elapsed)

    def first(self, n: int) -> list[Outcome]:
        return self.outcomes[:n]

    def by(self, hours: float) -> list[Outcome]:
        """What was evaluated within ``hours`` of simulated time; a replay whose budget ran
        out earlier keeps what it had (it is not credited with trials it never ran)."""
        return [o for o, t in zip(self.outcomes, self.clock) if t <= hours * 3600]


def replay(table: Table, sampler: str, seed: int, budget: int, variants: int = 0) -> Trace:
    """A search of the table by ``sampler`` until ``budget`` evaluated candidates. With
    ``variants``, as ``search.deployment_variants`` does: each new model has that many other
    deployments of it enqueued (paying no training; only more precise ones for a model that
    misses the accuracy constraints), fastest first by a cost predictor learned along the
    replay, as the driver orders them, after the unpruned twin of a pruned student that met them. The predictor learns with or without variants, so its
    error in this order is recorded (:attr:`Trace.latency_errors`)."""
    if sampler == BASELINE:
        return replay_uniform(table, seed, budget)
    study = optuna.create_study(directions=table.directions, sampler=SAMPLERS[sampler](seed))
    for params in anchor_params(table.space):
        study.enqueue_trial(params)
    trace = Trace()
    seen: set[str] = set()
    proposed: set[str] = set()
    duplicates_in_a_row = 0
    proposals = 0
    predictor = calibrated_predictor(table, seed, trace) if default_settings().calibrates(budget) else \
        CostPredictor(table.structure, seed)
    while len(trace.outcomes) < budget and proposals < MAX_PROPOSALS * budget:
        proposals += 1
        started = time.perf_counter()
        trial = study.ask()
        candidate = suggest_candidate(trial, table.space)
        fingerprint = candidate.fingerprint()
        sampler_s = time.perf_counter() - started
        trace.proposal_s.append((len(trace.outcomes), sampler_s))
        proposed.add(fingerprint)
        row = table.rows.get(fingerprint)
        if row is None:  # the table could not build or serve it: failed, as in a search
            study.tell(trial, state=TrialState.FAIL)
            continue
        for name, violation in row.constraints.items():
            trial.set_constraint(name, violation)
        study.tell(trial, row.values)
        if fingerprint in seen:  # answered from the study: no cost, not counted
            duplicates_in_a_row += 1
            if duplicates_in_a_row % EXPLORE_AFTER_DUPLICATES == 0:  # as the driver does
                params = unmeasured_params(table.space, proposed, seed + len(study.trials), EXPLORE_DRAWS)
                if params is None:
                    break
                study.enqueue_trial(params)
            continue
        duplicates_in_a_row = 0
        seen.add(fingerprint)
        predicted = predictor.predict(candidate)
        if predicted is not None:
            estimate, measured = predicted[LATENCY_P50_MS][0], row.metrics[LATENCY_P50_MS]
            trace.latency_errors.append((len(trace.outcomes), abs(estimate / measured - 1)))
        predictor.learn(candidate, row.metrics, predicted)
        if variants and "variant_of" not in trial.user_attrs:
            accurate = accurate_enough([Constraint.parse(name) for name in row.constraints], row.metrics, QualityMetric())
            queued = seen | {suggest_candidate(optuna.trial.FixedTrial(t.system_attrs["fixed_params"]), table.space)
                             .fingerprint() for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
            for params in follow_up_params(table.space, trial.params, variants, seed + trial.number, BATCH,
                                           accurate=accurate, cost=predictor.latency,
                                           known=lambda variant: variant.fingerprint() in queued):
                study.enqueue_trial(params, user_attrs={"variant_of": trial.number})
        trace.evaluate(row, sampler_s)
    return trace


def replay_uniform(table: Table, seed: int, budget: int) -> Trace:
    """The uniform baseline: the anchors (as every search starts), then the table's other
    candidates in a seeded random order -- each candidate equally likely, whatever branch
    of the conditional space it sits on."""
    anchors = [suggest_candidate(optuna.trial.FixedTrial(p), table.space).fingerprint()
               for p in anchor_params(table.space)]
    rest = sorted(set(table.rows) - set(anchors))
    random.Random(seed).shuffle(rest)
    trace = Trace()
    for fingerprint in [f for f in anchors if f in table.rows] + rest:
        if len(trace.outcomes) == budget:
            break
        trace.evaluate(table.rows[fingerprint])
    return trace


def calibrated_predictor(table: Table, seed: int, trace: Trace | None = None) -> CostPredictor:
    """A predictor that has learned the table's deployment calibration, as a search that
    calibrates starts (``search/loop/calibration.py``); its probes, all but the baseline
    every search takes, are charged to ``trace``'s clock at each row's measuring seconds."""
    predictor = CostPredictor(table.structure, seed)
    for index, (candidate, row) in enumerate(table.calibration()):
        predictor.learn(candidate, row.metrics, None, refit=False)
        if trace is not None and index:
            trace.elapsed += row.measure_s
    predictor.refit()
    return predictor


def predictor_error(table: Table, seed: int, learned: int = 20, judged: int = 20,
                    calibrated: bool = True) -> dict[str, float]:
    """MAPE of the cost predictor on ``judged`` trials predicted after ``learned`` measured
    ones (random order of the table's rows), each prediction made before its row is learned;
    ``calibrated``: after the deployment calibration, as a search of ``CALIBRATE_FROM_TRIALS`` or more."""
    rows = list(table.rows.values())
    random.Random(seed).shuffle(rows)
    predictor = calibrated_predictor(table, seed) if calibrated else CostPredictor(table.structure, seed)
    for index, row in enumerate(rows[: learned + judged]):
        candidate = suggest_candidate(optuna.trial.FixedTrial(row.params), table.space)
        predictor.learn(candidate, row.metrics, predictor.predict(candidate) if index >= learned else None)
    return predictor.mape()


Checkpoint = tuple[str, Callable[[Trace], list[Outcome]]]


def checkpoints(baseline: list[Trace]) -> list[Checkpoint]:
    """The pre-registered checkpoints: N evaluated candidates, and the simulated hours
    (rounded to 0.01) the baseline needed for ``EQUAL_TIME_AT`` candidates, median over seeds."""
    by_count = [(f"N={n}", lambda t, n=n: t.first(n)) for n in CHECKPOINTS]
    hours = [round(statistics.median(t.clock[n - 1] for t in baseline) / 3600, 2) for n in EQUAL_TIME_AT]
    by_time = [(f"{_at_time(n)} = {h:g} h", lambda t, h=h: t.by(h)) for h, n in zip(hours, EQUAL_TIME_AT)]
    return by_count + by_time


def _at_time(n: int) -> str:
    """The label of the equal-time checkpoint at the baseline's time for ``n`` candidates."""
    return f"{BASELINE}'s time for N={n}"


Results = dict[str, dict[str, dict[str, list[dict[str, float]]]]]
"""seed set -> checkpoint -> sampler -> the yardstick's scores of each seed's replay."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, action="append", help="default: both committed tables")
    parser.add_argument("--sampler", action="append", choices=sorted([*SAMPLERS, BASELINE]),
                        help="samplers to replay besides the uniform baseline (default: random and the default sampler)")
    parser.add_argument("--seed-set", action="append", help="replay only these seed sets (default: all three)")
    parser.add_argument("--json", action="store_true", help="every seed's scores at every checkpoint, as JSON")
    parser.add_argument("--variants", type=int, default=None,
                        help="search.deployment_variants of the replayed search (default: the product's default)")
    parser.add_argument("--good-share", type=float, default=None,
                        help="replay tpe with this share of its history as the good group (default: the product's)")
    args = parser.parse_args()
    if args.good_share is not None:
        SAMPLERS["tpe"] = lambda seed: WindowedTPESampler(seed=seed, good_share=args.good_share)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sets = seed_sets()
    unknown = set(args.seed_set or []) - set(sets)
    if unknown:
        parser.error(f"unknown seed set {', '.join(sorted(unknown))}; the sets are {', '.join(sets)}")
    samplers = list(dict.fromkeys([BASELINE, *(args.sampler or ["random", optuna_default()])]))
    chosen = {name: sets[name] for name in args.seed_set or sets}
    for path in args.table or [TABLES / "digits.csv", TABLES / "digits-transformer.csv"]:
        report(path, samplers, chosen, default_settings().deployment_variants if args.variants is None else args.variants,
               args.json, args.good_share)


def report(path: Path, samplers: list[str], sets: dict[str, list[int]], variants: int, as_json: bool,
           good_share: float | None = None) -> None:
    """Replay ``samplers`` on one table over the seed sets and print the yardstick's table."""
    table = Table.load(path)
    yard = table.yardstick()
    results: Results = {}
    cost: dict[str, list[float]] = {s: [] for s in samplers}
    traces_by_set: dict[str, dict[str, list[Trace]]] = {}
    for name, seeds in sets.items():
        traces = {s: [replay(table, s, seed, max(CHECKPOINTS), variants) for seed in seeds] for s in samplers}
        traces_by_set[name] = traces
        results[name] = {label: {s: [yard.scores(pick(t)) for t in traces[s]] for s in samplers}
                         for label, pick in checkpoints(traces[BASELINE])}
        for s in samplers:  # the sampler's cost per proposal on the way to the last checkpoint
            cost[s] += [sec for t in traces[s] for n, sec in t.proposal_s if n >= max(CHECKPOINTS) - 10]
    if as_json:
        print(json.dumps({"table": path.stem, "seed_sets": sets, "results": results}, indent=1))
        return
    print(f"# search quality: {len(samplers)} samplers x seed sets {', '.join(sets)} (20 seeds each) replayed on "
          f"a measured table of {table.candidates} {path.stem} candidates -- {provenance()}; table measured in "
          f"{table.provenance} ({table.measuring_hours:.2f} h); search.deployment_variants = {variants}; "
          f"tpe's good group: {'Optuna default' if good_share is None else f'{good_share:g} of its history'}")
    print("Median over the set's seeds [bootstrap 95 % interval]; regret = best feasible value found / the table's "
          f"best - 1; ratios are the sampler's median over {BASELINE}'s (for HV > 1 is better, for regret < 1). "
          "Seed sets: " + "; ".join(f"{n} = {seeds[0]}-{seeds[-1]}" for n, seeds in sets.items()))
    print_results(results, samplers)
    print("\nSampler seconds per proposal, the last 10 evaluated candidates before N="
          f"{max(CHECKPOINTS)}: " + ", ".join(f"{s} {1000 * statistics.median(v):.1f} ms" for s, v in cost.items() if v))
    print_predictor(table, path, next(iter(sets.values())))
    print_predictor_in_search_order(traces_by_set, samplers)
    default = optuna_default()
    if set(sets) == set(seed_sets()) and default in samplers:
        judge_default(results, default, path.stem)


def print_results(results: Results, samplers: list[str]) -> None:
    vs = [f"vs {BASELINE}: {metric}" for metric in METRICS]
    print("| seed set | checkpoint | sampler | " + " | ".join(METRICS + tuple(vs)) + " |")
    print("|---|---|---|" + "---|" * 2 * len(METRICS))
    for name, by_checkpoint in results.items():
        for label, by_sampler in by_checkpoint.items():
            for sampler in samplers:
                scores = by_sampler[sampler]
                cells = [str(median_interval([s[m] for s in scores])) for m in METRICS]
                cells += ["-" if sampler == BASELINE else str(_versus(by_sampler, sampler, m)) for m in METRICS]
                print(f"| {name} | {cell(label)} | {sampler} | " + " | ".join(cells) + " |")


def _versus(by_sampler: dict[str, list[dict[str, float]]], sampler: str, metric: str) -> Interval:
    return ratio_interval([s[metric] for s in by_sampler[sampler]], [s[metric] for s in by_sampler[BASELINE]])


def judge_default(results: Results, default: str, table: str) -> None:
    """Issue 30's goal, on every seed set: at N=40 and at the baseline's time for N=40, the
    default's median latency regret <= 0.5x the baseline's, and its HV ratio's 95 % interval
    above 1 under both reference points."""
    regret, study, normalised = METRICS[0], METRICS[2], METRICS[3]
    for checkpoint in (f"N={EQUAL_TIME_AT[-1]}", _at_time(EQUAL_TIME_AT[-1])):
        parts, met = [], True
        for name, by_checkpoint in results.items():
            by_sampler = next(v for label, v in by_checkpoint.items() if label.startswith(checkpoint))
            r, s, n = (_versus(by_sampler, default, m) for m in (regret, study, normalised))
            met &= r.value <= REGRET_GOAL and s.low > 1 and n.low > 1
            parts.append(f"{name}: {r.value:.2f}x, {s.low:.3f} / {n.low:.3f}")
        goal(f"{default} vs {BASELINE}, {table}, at {checkpoint}: latency regret ratio; HV ratio 95 % CI low "
             "(study / normalised reference), every seed set", "; ".join(parts),
             f"<= {REGRET_GOAL}x; > 1 / > 1", met)


LEARNING_CURVE = (10, 20, 30, 40, 60)
"""Measured trials before the 20 judged ones: how the predictor's error falls with data."""


def print_predictor(table: Table, path: Path, seeds: list[int]) -> None:
    curve = {n: statistics.median(predictor_error(table, seed, learned=n)[LATENCY_P50_MS] for seed in seeds)
             for n in LEARNING_CURVE if n != 20}
    errors = [predictor_error(table, seed) for seed in seeds]
    curve[20] = statistics.median(e[LATENCY_P50_MS] for e in errors)
    uncalibrated = [predictor_error(table, seed, calibrated=False) for seed in seeds]
    print(f"\nCost predictor (Gaussian process on log structure features, latency averaged with an overhead-plus-work "
          f"model), having learned the study's deployment calibration ({len(table.calibration())} readings: the "
          f"teacher and the smallest model at each deployment, as a search of >= {CALIBRATE_FROM_TRIALS} trials "
          "takes it), error of predictions made before "
          "measuring, trials 21-40 of a random order, median [95 % CI] over seeds: "
          + ", ".join(f"{name} MAPE {median_interval([e[name] for e in errors])} %" for name in PREDICTED))
    print("The same without the calibration (a run of fewer trials, or calibrate_deployments: false): "
          + ", ".join(f"{name} MAPE {median_interval([e[name] for e in uncalibrated])} %" for name in PREDICTED))
    if table.retest:
        print(f"Noise floor: {table.retest['candidates']} clean rows measured a second time "
              f"({' to '.join(t[:16] for t in table.retest['measured_between'])}) differ from the table's reading by MAPE "
              + ", ".join(f"{name} {table.retest[f'{name}_mape']:.1f} %" for name in PREDICTED)
              + " -- no prediction can be judged closer than that.")
    print("Latency MAPE of the 20 predictions after N measured trials (random order, median over the same seeds): "
          + ", ".join(f"N={n} {curve[n]:.1f} %" for n in sorted(curve)))
    floor, deployments = structure_floor(table)
    print(f"Structure floor: fitted per deployment on all {len(table.rows)} rows ({deployments} deployments) and "
          f"judged on the same rows, a model of MACs, parameters and depth misses latency p50 by MAPE {floor:.1f} % "
          "(structure_floor): the error left by what such features cannot see, with every row known.")
    latency_mape = statistics.median(e[LATENCY_P50_MS] for e in errors)
    # Issue 31 set this goal on the digits table; on another table it is printed as a fact,
    # so the goal table of benchmarks/README.md holds it once.
    judge = goal if path.resolve() == (TABLES / "digits.csv").resolve() else fact
    without = statistics.median(e[LATENCY_P50_MS] for e in uncalibrated)
    judge(f"cost predictor: latency MAPE after 20 measured {path.stem} trials",
          f"{latency_mape:.1f} % (deployment calibration learned first; {without:.1f} % without)", "<= 10 %",
          latency_mape <= 10)


def print_predictor_in_search_order(traces: dict[str, dict[str, list[Trace]]], samplers: list[str]) -> None:
    """The predictor's latency MAPE on evaluated candidates 21-40 of each sampler's replays
    (the baseline's order is random, as ``predictor_error``'s): a search's own order
    starts with the anchors and measures deployment variants of the models it builds."""
    print("Cost predictor in each sampler's own order (as a search learns it: anchors first, deployment variants), "
          "latency MAPE of evaluated candidates 21-40, median over the set's seeds:")
    for sampler in samplers:
        if sampler == BASELINE:
            continue
        medians = {name: statistics.median(m for t in by_sampler[sampler] if (m := _judged_mape(t)) is not None)
                   for name, by_sampler in traces.items()}
        print(f"  {sampler}: " + ", ".join(f"{name} {value:.1f} %" for name, value in medians.items()))


def _judged_mape(trace: Trace) -> float | None:
    """``None`` for a replay that ended before its 21st candidate (a sampler stuck on measured ones)."""
    judged = [error for n, error in trace.latency_errors if 20 <= n < 40]
    return 100 * statistics.fmean(judged) if judged else None


def structure_floor(table: Table) -> tuple[float, int]:
    """Latency MAPE of the closest any predictor can come that knows a candidate only by its
    structure (MACs, parameters, depth, teacher or student) and its deployment, and the
    number of deployments: per deployment (runtime, precision, strategy, threads), fitted
    on *every* row of the table and judged on the same rows -- the better of a product
    (linear in the logs) and a sum (fixed overhead + cost per MAC, per parameter, per
    layer; non-negative). A predictor after 20 trials sees two rows per deployment at best,
    so it cannot be expected to beat this."""
    groups: dict[tuple[object, ...], list[tuple[Candidate, dict[str, float]]]] = {}
    for row in table.rows.values():
        candidate = suggest_candidate(optuna.trial.FixedTrial(row.params), table.space)
        precision = "simulated" if candidate.simulated else f"{candidate.bits}{candidate.float_dtype or ''}"
        key = (candidate.runtime, precision, candidate.strategy, candidate.degree, candidate.threads)
        groups.setdefault(key, []).append((candidate, row.metrics))
    errors: list[float] = []
    for rows in groups.values():
        latency = np.array([m[LATENCY_P50_MS] for _, m in rows])
        depth = [0.0 if c.student is None else float(c.student.depth) for c, _ in rows]
        teacher = [float(c.student is None) for c, _ in rows]
        product = np.array([[1.0, np.log(m[MACS]), np.log(m[PARAMS]), np.log(max(d, 1.0)), t]
                            for (_, m), d, t in zip(rows, depth, teacher)])
        coefficients = np.linalg.lstsq(product, np.log(latency), rcond=None)[0]
        product_error = np.abs(np.exp(product @ coefficients) / latency - 1)
        additive = np.array([[1.0, m[MACS] / 1e6, m[PARAMS] / 1e5, d, t] for (_, m), d, t in zip(rows, depth, teacher)])
        coefficients = nnls(additive / latency[:, None], np.ones(len(rows)))[0]  # relative error, least squares
        sum_error = np.abs(additive @ coefficients / latency - 1)
        errors += list(min(product_error, sum_error, key=np.mean))
    return 100 * float(np.mean(errors)), len(groups)


def fact(name: str, measured: str, target: str, met: bool) -> None:
    print(f"{name}: {measured} (the digits goal: {target}, {'reached' if met else 'not reached'} here)")


def default_settings() -> SearchSettings:
    """The search settings a user gets without a config: the default sampler is judged as
    it runs there (with the default deployment variants)."""
    return SearchSettings()


def optuna_default() -> str:
    return default_settings().sampler


if __name__ == "__main__":
    main()
