"""Does multi-objective early stopping pay? The digits search with and without it.

Two searches of the embedded digits config, same sampler seed and the same budget in
trials (stopped trials count), each in its own output directory (own stage cache, so
neither profits from the other's trained students). Judged by the search-loop wall time
saved (goal >= 25 %) and by the final front's hypervolume with early stopping relative to
without (goal >= 0.98), both fronts measured against the same reference point (the run
without early stopping's).

    .venv/bin/python benchmarks/early_stopping.py [--trials 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.pareto import front_trials, hypervolume
from slimsearch.search.study import load_existing_study

from common import provenance, run_search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=SlimsearchConfig().search.n_trials)
    trials = parser.parse_args().trials
    print(f"# early stopping on the digits search ({trials} trials each) -- {provenance()}")
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        runs = {enabled: run_search(Path(root), f"early-stopping-{enabled}", n_trials=trials,
                                    early_stopping={"enabled": enabled}) for enabled in (False, True)}
        reference = None
        volumes = {}
        for enabled, (summary, config) in runs.items():
            study = load_existing_study(config.storage_url, config.search.study_name)
            reference = reference or study.user_attrs["reference_point"]
            volumes[enabled] = hypervolume(front_trials(study), list(config.objectives.values()), reference)
    print("| early stopping | loop wall s | complete | stopped early (rules) | failed | front HV |")
    print("|---|---|---|---|---|---|")
    for enabled, (summary, _) in runs.items():
        rules = ", ".join(f"{k} {v}" for k, v in summary.pruned_rules.items()) or "-"
        print(f"| {'on' if enabled else 'off'} | {summary.seconds:.1f} | {summary.completed} | {summary.pruned} "
              f"({rules}) | {summary.failed} | {volumes[enabled]:.5g} |")
    saved = 1 - runs[True][0].seconds / runs[False][0].seconds
    ratio = volumes[True] / volumes[False] if volumes[False] else float("nan")
    print(f"wall time saved: {100 * saved:.1f} % (goal >= 25 %: {'met' if saved >= 0.25 else 'NOT met'}); "
          f"HV on/off: {ratio:.3f} (goal >= 0.98: {'met' if ratio >= 0.98 else 'NOT met'}); "
          f"reference point {reference}")


if __name__ == "__main__":
    main()
