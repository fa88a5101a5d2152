"""The orchestrator's own work per trial, at the study sizes an overnight search reaches.

A synthetic study shaped like a real digits study (65 % measured, 15 % answers to
repeated proposals, 10 % stopped early, 10 % failed; candidates, metrics, curves and
constraints as the driver records them) is grown to each size, then the real
``SearchDriver`` runs ``--trials`` more trials on it with building and measuring
replaced by an instant stub (benchmark code: it returns metrics derived from the
candidate). What is left is bookkeeping: asking, both stores, the front, the predictor,
publishing. Printed per size: the time from start to the first new trial, the median and
p95 of the time between two new trials and between two proposals (a converged sampler
proposes measured candidates again: each is answered from the study, at a proposal's
cost), and each component's median; the ratio overhead(largest) / overhead(smallest) per
proposal is the verdict.

The sampler is shown on its own line (the sampled parameters are written after it, in
one transaction with the trial's candidate: ``search/store/trial_writes.py``): it
learns from a bounded history (the front and the latest 1,000 trials,
``search/store/windowed_sampler.py``), so its cost stops growing past that size.

    .venv/bin/python benchmarks/overhead.py                       # 100, 1,000, 10,000 on SQLite
    .venv/bin/python benchmarks/overhead.py --sizes 100,50000 --postgres
    .venv/bin/python benchmarks/overhead.py --sizes 10000 --keep   # then time status/front/report on it
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
import yaml
from optuna.distributions import BaseDistribution
from rich.console import Console

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop import driver as driver_module
from slimsearch.search.loop.driver import SearchDriver
from slimsearch.search.loop import proposals as proposals_module
from slimsearch.search.loop import recording as recording_module
from slimsearch.search.loop.publishing import FrontPublisher
from slimsearch.search.loop.session import StudySession
from slimsearch.search.loop.record_repair import RecordRepair
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.loop.trial import TrialOutcome, TrialResult
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.outages import Outages
from slimsearch.search.store.study import load_existing_study
from slimsearch.search.store.tracking import MlflowTracker
from slimsearch.spaces import Candidate, suggest_candidate

from common import goal, provenance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres_server, for --postgres

SCRATCH_TRIALS = 500
"""Candidates drawn from one scratch study before the generator starts a new one."""
RUN_POOL = 64
"""Real MLflow runs the synthetic trials point at (round robin): re-tagging one must work."""
COMPONENTS = {
    "ask": (optuna.Study, "ask"),
    "sampling (TPE)": (proposals_module, "suggest_candidate"),
    "tell": (recording_module, "tell"),
    "front update": (FrontPublisher, "update"),
    "front publish": (FrontPublisher, "publish"),
    "ledger catch-up": (StudyLedger, "catch_up"),
    "stale check": (RecordRepair, "fail_stale_trials"),
    "early-stopping monitor": (StudySession, "monitor"),
    "predictor fit": (CostPredictor, "refit"),
    "MLflow run start": (MlflowTracker, "start_trial"),
    "MLflow run finish": (MlflowTracker, "finish_trial"),
}


def stub_metrics(candidate: Candidate) -> dict[str, float]:
    """Plausible measurements, the same for the same candidate (so repeats agree)."""
    rng = np.random.default_rng(int(hashlib.sha256(candidate.fingerprint().encode()).hexdigest()[:8], 16))
    accuracy = float(rng.uniform(0.80, 0.97))
    latency = float(rng.uniform(0.3, 3.0))
    return {"accuracy": accuracy, "accuracy_drop": 0.95 - accuracy, "test_accuracy": accuracy - 0.01,
            "latency_p50_ms": latency, "latency_p95_ms": latency * 1.2, "latency_p50_ci_low_ms": latency * 0.97,
            "latency_p50_ci_high_ms": latency * 1.03, "memory_mb": float(rng.uniform(8, 20)),
            "memory_spread_mb": 0.05, "model_mb": float(rng.uniform(0.05, 0.4)), "val_rows": 300.0,
            "macs": float(rng.uniform(1e5, 3e6)), "params": float(rng.uniform(1e4, 1e5))}


def instant_trial(candidate: Candidate, *args: Any, **kwargs: Any) -> TrialOutcome:
    """The stub for building and measuring a candidate."""
    return TrialOutcome("complete", TrialResult(stub_metrics(candidate), {"quant_path": "stub"}),
                        curve={"distill 1/2": 0.5, "serving": stub_metrics(candidate)["accuracy"]})


def config_for(out: Path, storage: str | None, tracking: str | None) -> SlimsearchConfig:
    return SlimsearchConfig.model_validate({
        "output_dir": str(out), "search": {"study_name": "overhead", "storage": storage, "front_every": 5},
        # Fine steps: tens of thousands of distinct candidates, so the timed trials are new ones
        # (the default digits space is exhausted long before 10,000 trials: then every proposal
        # is a repeat answered from the study, which is another cost).
        "space": {"prune": {"low": 0.0, "high": 0.9, "step": 0.01},
                  "student": {"width": [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], "depth": [1, 2, 3, 4],
                              "temperature": [1.0, 2.0, 3.0, 4.0, 6.0], "alpha": [0.0, 0.25, 0.5, 0.75]}},
        "tracking": {"tracking_uri": tracking}, "training": {"teacher_epochs": 3},
        # The synthetic trials have no trained stages to re-measure; confirmation is a cost of a run's end, not of a proposal.
        "evaluation": {"confirm_passes": 0},
    })


def synthetic_trials(config: SlimsearchConfig, count: int, start: int, run_ids: list[str],
                     rng: np.random.Generator) -> Iterator[optuna.trial.FrozenTrial]:
    """Trials as the driver records them: the states and attributes of a real study's mix."""
    constraint = config.parsed_constraints[0]
    measured: list[tuple[dict[str, Any], dict[str, BaseDistribution], Candidate]] = []
    for index in range(count):
        if index % SCRATCH_TRIALS == 0:  # an in-memory study's ask slows down with its trials
            scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=int(rng.integers(1 << 30))))
        asked = scratch.ask()
        candidate = suggest_candidate(asked, config.space)
        params, distributions = asked.params, asked.distributions
        scratch.tell(asked, state=optuna.trial.TrialState.FAIL)
        attrs: dict[str, Any] = {"candidate": candidate.to_dict(), "summary": candidate.summary(),
                                 "simulated": candidate.simulated, "worker": 0, "host": "bench", "pid": 1,
                                 "mlflow_run_id": run_ids[(start + index) % len(run_ids)]}
        kind = rng.random()
        if kind < 0.15 and measured:
            params, distributions, candidate = measured[int(rng.integers(len(measured)))]
            attrs.update(candidate=candidate.to_dict(), summary=candidate.summary(), duplicate_of=0)
            del attrs["mlflow_run_id"]  # an answered repeat has no MLflow run
        if kind >= 0.90:
            yield optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=params,
                                            distributions=distributions,
                                            user_attrs={**attrs, "failure_kind": "error", "failure_reason": "stub"})
            continue
        metrics = stub_metrics(candidate)
        curve = {"distill 1/2": metrics["accuracy"] - 0.1, "serving": metrics["accuracy"]}
        if 0.80 <= kind < 0.90:
            yield optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params=params,
                                            distributions=distributions,
                                            user_attrs={**attrs, "accuracy_curve": curve, "pruned_rule": "dominated",
                                                        "pruned_at": "serving", "pruned_reason": "stub"})
            continue
        measured.append((params, distributions, candidate))
        yield optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, params=params, distributions=distributions,
            values=[metrics[name] for name in config.objectives],
            user_attrs={**attrs, "metrics": metrics, "tags": {"quant_path": "stub"}, "accuracy_curve": curve},
            system_attrs={f"constraints:{constraint.name}": constraint.violation(metrics)},
        )


def run_pool(config: SlimsearchConfig, size: int) -> list[str]:
    """Real MLflow trial runs (of the study's parent run) for the synthetic trials to point at."""
    tracker = MlflowTracker(config.tracking_uri, config.tracking.experiment, config.artifact_root,
                            config.search.study_name, {}, Outages("bench", 60, print))
    return [tracker.start_trial(-1 - i) for i in range(size)]


def write_config(config: SlimsearchConfig) -> Path:
    """The benchmark's config as a file, for the CLI's read commands on a kept study."""
    path = Path(config.output_dir).parent / "overhead.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def grow(config: SlimsearchConfig, size: int, run_ids: list[str], rng: np.random.Generator) -> None:
    study = load_existing_study(config.storage_url, config.search.study_name)
    have = len(study.trials)
    started = time.monotonic()
    study.add_trials(list(synthetic_trials(config, size - have, have, run_ids, rng)))
    print(f"  grew the study {have} -> {size} trials in {time.monotonic() - started:.0f} s", flush=True)


class Timings:
    """Seconds per call of each component, and the gaps between trials, while patched in."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.asked: list[float] = []
        self.trial_starts: list[float] = []
        self.started = 0.0

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            if name == "ask":
                self.asked.append(began)
            try:
                return function(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - began)
        return timed

    def stub(self, *args: Any, **kwargs: Any) -> TrialOutcome:
        self.trial_starts.append(time.perf_counter())
        return instant_trial(*args, **kwargs)


def drive(config: SlimsearchConfig, trials: int) -> Timings:
    """``trials`` more trials through the real driver, build and measure stubbed."""
    timings = Timings()
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in COMPONENTS.items()}
    build_and_measure = driver_module.run_candidate
    try:
        for name, (owner, attribute) in COMPONENTS.items():
            setattr(owner, attribute, timings.wrap(name, originals[name]))
        driver_module.run_candidate = timings.stub
        timings.started = time.perf_counter()
        SearchDriver(config, Console(file=io.StringIO(), width=160)).run(n_trials=trials)
    finally:
        for name, (owner, attribute) in COMPONENTS.items():
            setattr(owner, attribute, originals[name])
        driver_module.run_candidate = build_and_measure  # a test process runs real searches after it
    return timings


PROPOSAL_GOALS_MS = {"sqlite": {10_000: 50, 50_000: 100}, "postgresql": {10_000: 100}}
"""Median overhead per proposal the issue asks for, per storage and study size."""
READ_COMMANDS = {"status": (3.0, 500), "front": (3.0, 500), "report": (30.0, 500)}
"""Each read command's goal on a 10,000-trial study: (wall seconds, peak MiB)."""
READ_COMMANDS_FROM = 10_000
"""Study sizes from which the read commands are timed."""
# VmHWM, not ru_maxrss: the latter counts the benchmark's own memory, inherited at fork.
MEASURED_CLI = ("import sys; from slimsearch.search.cli import app\n"
                "try:\n    app()\nexcept SystemExit:\n    pass\n"
                "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
                "print(f'peak_kib={hwm.split()[1]}', file=sys.stderr)")


def time_read_commands(config_path: Path, size: int) -> None:
    """``slimsearch status|front|report CONFIG`` as a user runs them (a fresh process each),
    with their wall time and peak memory (the process's own maximum resident set)."""
    for command, (seconds, mib) in READ_COMMANDS.items():
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", MEASURED_CLI, command, str(config_path)],
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - began
        peak = int(done.stderr.rsplit("peak_kib=", 1)[1]) / 1024
        goal(f"slimsearch {command} at n={size}", f"{wall:.2f} s, {peak:.0f} MiB", f"<= {seconds:g} s, <= {mib} MiB",
             wall <= seconds and peak <= mib)


def milliseconds(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):8.1f}" if values else "       -"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--trials", type=int, default=30, help="stubbed trials timed at each size")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL server")
    parser.add_argument("--postgres-sizes", default="100,10000", help="the sizes timed on PostgreSQL")
    parser.add_argument("--keep", action="store_true",
                        help="keep the SQLite study (its output folder is printed) to time status/front/report on it")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(provenance())
    print("driver overhead per trial, build and measure stubbed (ms; median of the timed trials)")
    backends = [("sqlite", None, sizes)]
    if args.postgres:
        from tests.postgres_server import running_server

        backends.append(("postgresql", running_server(("optuna", "mlflow")),
                         [int(s) for s in args.postgres_sizes.split(",")]))
    results: dict[str, dict[int, float]] = {}
    for kind, server, kind_sizes in backends:
        base = next(server).url if server else None
        root = Path(tempfile.mkdtemp(prefix=f"slimsearch-overhead-{kind}-"))
        config = config_for(root / "out", base and base + "optuna", base and base + "mlflow")
        rng = np.random.default_rng(0)
        try:
            drive(config, 2)  # the study, its baseline (measured for real) and the parent run
            run_ids = run_pool(config, RUN_POOL)
            results[kind] = {}
            for size in kind_sizes:
                grow(config, size, run_ids, rng)
                timings = drive(config, args.trials)
                gaps, proposals = list(np.diff(timings.trial_starts)), list(np.diff(timings.asked))
                first = timings.trial_starts[0] - timings.started if timings.trial_starts else float("nan")
                results[kind][size] = statistics.median(proposals)
                print(f"{kind} n={size:>6}: first new trial after {first:.1f} s; per new trial median "
                      f"{1000 * statistics.median(gaps):.1f} ms, p95 {1000 * float(np.percentile(gaps, 95)):.1f} ms; "
                      f"per proposal median {1000 * statistics.median(proposals):.1f} ms, p95 "
                      f"{1000 * float(np.percentile(proposals, 95)):.1f} ms ({len(timings.asked)} proposals)")
                for name in COMPONENTS:
                    print(f"    {name:<24}{milliseconds(timings.calls[name])} ms  ({len(timings.calls[name])} calls)")
                if size >= READ_COMMANDS_FROM and not server:
                    time_read_commands(write_config(config), size)
        finally:
            if args.keep and not server:
                print(f"  kept: {config.output_dir} (config: {write_config(config)})")
            else:
                shutil.rmtree(root, ignore_errors=True)
            if server:
                server.close()
    for kind, by_size in results.items():
        smallest, largest = min(by_size), max(by_size)
        ratio = by_size[largest] / by_size[smallest]
        goal(f"overhead per proposal {kind} n={largest} / n={smallest}",
             f"{ratio:.2f}x ({1000 * by_size[largest]:.0f} ms)",
             "<= 2x", ratio <= 2)
        for size, limit_ms in PROPOSAL_GOALS_MS[kind].items():
            if size in by_size:
                goal(f"overhead per proposal {kind} n={size}", f"{1000 * by_size[size]:.0f} ms",
                     f"<= {limit_ms} ms", 1000 * by_size[size] <= limit_ms)


if __name__ == "__main__":
    main()
