"""Stage cache: what a repeated student costs against its first build, in a real search.

Each candidate is enqueued twice in one digits search (a distilled student, then the
same student pruned, which re-uses the distilled weights); the build cost is the sum of
the stage seconds each trial recorded (distill, prune + fine-tune, quantize), with the
cache hits the trial recorded. Judged by the worst repeat / first-build ratio
(goal <= 10 %).

    .venv/bin/python benchmarks/cache_reuse.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from optuna.trial import TrialState

from slimsearch.search.store.study import load_existing_study

from common import cell, goal, provenance, run_search

STUDENT = {"student": "distilled", "student.width": 0.5, "student.depth": 3, "student.temperature": 4.0,
           "student.alpha": 0.5, "prune.ratio": 0.0, "quantize.bits": 8, "parallel.runtime": "torch",
           "parallel.strategy": "single", "parallel.threads": 2}
PRUNED = {**STUDENT, "prune.ratio": 0.3}
STAGES = ("distill", "prune_finetune", "quantize")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        work = [STUDENT, STUDENT, PRUNED, PRUNED]
        _, config = run_search(Path(root), "cache", enqueue=work, n_trials=len(work), early_stopping={"enabled": False})
        study = load_existing_study(config.storage_url, config.search.study_name)
    print(f"# stage cache: repeated candidates in one digits search -- {provenance()}")
    print("| trial | candidate | " + " | ".join(f"{s} s (cache hit)" for s in STAGES) + " | build s | vs first build |")
    print("|---|---|" + "---|" * (len(STAGES) + 2))
    first_build: dict[str, float] = {}
    ratios = []
    for trial in study.trials:
        if trial.state != TrialState.COMPLETE:
            continue
        metrics, tags = trial.user_attrs["metrics"], trial.user_attrs["tags"]
        build = sum(metrics.get(f"seconds_{s}", 0.0) for s in STAGES)
        summary = trial.user_attrs["summary"]
        ratio = build / first_build[summary] if summary in first_build else None
        first_build.setdefault(summary, build)
        if ratio is not None:
            ratios.append(ratio)
        cells = [f"{metrics[f'seconds_{s}']:.2f} ({tags.get(f'cache_hit.{s}', '-')})" if f"seconds_{s}" in metrics
                 else "-" for s in STAGES]
        print(f"| {trial.number} | {cell(summary)} | " + " | ".join(cells) + f" | {build:.2f} | "
              f"{'first' if ratio is None else f'{100 * ratio:.1f} %'} |")
    goal("repeated candidate's build vs its first build (worst)", f"{100 * max(ratios):.1f} %", "<= 10 %",
         max(ratios) <= 0.10)


if __name__ == "__main__":
    main()
