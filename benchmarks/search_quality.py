"""Search quality: TPE, NSGA-II and random search against the exhaustive grid.

A reduced digits space (126 candidates) is enumerated once with the real search driver
(every candidate built and measured; the grid study is kept under
``slimsearch-out/bench-grid-*`` and reused while the space and config are unchanged).
The samplers are then replayed on that grid: each suggests candidates through the same
``suggest_candidate`` as a real search (teacher enqueued first, as ``slimsearch run``
does) and is told the objectives and constraint values the grid measured for them. So
every number is a measurement, and 9 x 80 trials cost seconds, not hours.

Hypervolume is Optuna's (``slimsearch.search.pareto.hypervolume``, cross-checked in
tests/test_pareto.py) against the grid study's reference point, printed. Judged by
HV(TPE)/HV(random) at N = 40 (goal >= 1.15) and by the share of the grid's HV that TPE
reaches within 25 % of the grid's evaluations (goal >= 95 %).

    .venv/bin/python benchmarks/search_quality.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.pareto import front_trials, hypervolume
from slimsearch.search.study import SAMPLERS, evaluated_count, load_existing_study
from slimsearch.spaces import ParallelSpec, PruneSpec, QuantizeSpec, SpaceSpec, StudentSpec, grid_params
from slimsearch.spaces import Candidate, suggest_candidate, teacher_params

from common import goal, provenance, run_search

REDUCED_SPACE = SpaceSpec(
    student=StudentSpec(width=[0.25, 0.5, 1.0], depth=[2, 3], temperature=[4.0], alpha=[0.5]),
    prune=PruneSpec(low=0.0, high=0.6, step=0.3),
    quantize=QuantizeSpec(bits=[32, 8, 4]),
    parallel=ParallelSpec(strategies=["single"], threads=[1, 2], runtimes=["torch"]),
)
CHECKPOINTS = (20, 40, 80)
GRID_ROOT = Path(__file__).resolve().parents[1] / "slimsearch-out"


def grid_study() -> tuple[optuna.Study, str]:
    """The exhaustive grid over ``REDUCED_SPACE``, measured once and then reused; returns the
    study and the provenance line of the run that measured it."""
    grid = grid_params(REDUCED_SPACE)
    identity = json.dumps([REDUCED_SPACE.model_dump(), SlimsearchConfig().model_dump(exclude={"search", "output_dir"})],
                          sort_keys=True, default=str)
    name = f"bench-grid-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    config = SlimsearchConfig(output_dir=str(GRID_ROOT / name))
    stamp = GRID_ROOT / name / "provenance.txt"
    database = GRID_ROOT / name / "optuna.db"
    done = evaluated_count(load_existing_study(config.storage_url, name)) if database.exists() else 0
    if done < len(grid):  # first run, or a partly measured grid resuming (its enqueued candidates still wait)
        run_search(GRID_ROOT, name, space=REDUCED_SPACE, enqueue=None if database.exists() else grid,
                   n_trials=len(grid) - done, sampler="random", early_stopping={"enabled": False})
        stamp.write_text(provenance())
    return load_existing_study(config.storage_url, name), stamp.read_text().strip()

def replay(sampler: str, seed: int, measured: dict[str, FrozenTrial], directions: list[str],
           reference: list[float], trials: int) -> list[float]:
    """Hypervolume after each of ``trials`` suggestions of ``sampler``, told the grid's measurements."""
    study = optuna.create_study(directions=directions, sampler=SAMPLERS[sampler](seed))
    study.enqueue_trial(teacher_params(REDUCED_SPACE))
    volumes = []
    for _ in range(trials):
        trial = study.ask()
        found = measured.get(suggest_candidate(trial, REDUCED_SPACE).fingerprint())
        if found is None:  # the grid could not build or serve it: a failed trial, as in a search
            study.tell(trial, state=TrialState.FAIL)
        else:
            for name, violation in found.constraints.items():
                trial.set_constraint(name, violation)
            study.tell(trial, found.values)
        volumes.append(hypervolume(front_trials(study), directions, reference))
    return volumes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    seeds = parser.parse_args().seeds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid, grid_run = grid_study()
    directions = [d.name.lower() for d in grid.directions]
    reference = grid.user_attrs["reference_point"]
    complete = [t for t in grid.trials if t.state == TrialState.COMPLETE]
    measured = {Candidate.from_dict(t.user_attrs["candidate"]).fingerprint(): t for t in complete}
    grid_hv = hypervolume(front_trials(grid), directions, reference)
    quarter = math.ceil(0.25 * len(grid_params(REDUCED_SPACE)))
    budget = max(*CHECKPOINTS, quarter)
    curves = {sampler: [replay(sampler, seed, measured, directions, reference, budget) for seed in range(seeds)]
              for sampler in ("tpe", "nsga2", "random")}

    def mean_at(sampler: str, n: int) -> float:
        return statistics.mean(curve[n - 1] for curve in curves[sampler])

    print(f"# search quality on a {len(grid_params(REDUCED_SPACE))}-candidate digits grid, {seeds} seeds per sampler "
          f"-- {provenance()}; grid measured in {grid_run}")
    print(f"Objectives {dict(zip(grid.user_attrs['objectives'], directions))}, reference point {reference}; "
          f"grid: {len(complete)} measured, {len(grid.trials) - len(complete)} not buildable, front HV {grid_hv:.5g}.")
    print("| sampler | " + " | ".join(f"HV at N={n} (mean, min-max)" for n in CHECKPOINTS)
          + f" | share of grid HV at N={quarter} (25 %) |")
    print("|---|" + "---|" * (len(CHECKPOINTS) + 1))
    for sampler, runs in curves.items():
        cells = [f"{mean_at(sampler, n):.5g} ({min(c[n - 1] for c in runs):.5g}-{max(c[n - 1] for c in runs):.5g})"
                 for n in CHECKPOINTS]
        print(f"| {sampler} | " + " | ".join(cells) + f" | {100 * mean_at(sampler, quarter) / grid_hv:.1f} % |")
    print("HV(TPE)/HV(random): " + ", ".join(f"N={n}: {mean_at('tpe', n) / mean_at('random', n):.3f}"
                                            for n in CHECKPOINTS))
    ratio = mean_at("tpe", 40) / mean_at("random", 40)
    goal("HV(TPE)/HV(random) at N=40", f"{ratio:.3f}", ">= 1.15", ratio >= 1.15)
    share = mean_at("tpe", quarter) / grid_hv
    goal(f"TPE share of grid HV at {quarter} of {len(grid_params(REDUCED_SPACE))} evaluations", f"{100 * share:.1f} %",
         ">= 95 %", share >= 0.95)


if __name__ == "__main__":
    main()
