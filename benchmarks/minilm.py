"""The pretrained MiniLM task end to end: the search of ``configs/minilm.yaml`` against its teacher.

Runs the config's search (24 trials) on the built-in ``minilm-topics`` task and prints
the fine-tuned fp32 teacher next to every front point: model bytes, MACs, p50/p95
latency and memory at batch 64 x 32 token ids, accuracy and drop, the quantization path
and the techniques that produced the point. Four students are enqueued first as a
head-to-head of the two ways to start one -- the same width/depth cut from the teacher
(``student.init: teacher``) or trained from scratch -- so that comparison is measured,
not inferred. Judged by the goals of the real-models issue: no trial fails with an
error, and a front point is >= 3x smaller and >= 4x faster (p50) at <= 1 % drop.

    .venv/bin/python benchmarks/minilm.py [--trials 24]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from slimsearch.search.loop.recording import RunSummary
from slimsearch.search.store.study import load_existing_study
from slimsearch.spaces import SpaceSpec, anchor_params

from common import goal, provenance, run_search
from compression import front_table, shrinks

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "minilm.yaml").read_text())
HEAD_TO_HEAD = [(0.5, 3), (1.0, 2)]


def student(width: float, depth: int, init: str) -> dict[str, object]:
    return {"student": "distilled", "student.width": width, "student.depth": depth, "student.temperature": 2.0,
            "student.alpha": 0.5, "student.init": init, "prune.ratio": 0.0, "lowrank.rank_ratio": 0.0, "quantize.bits": 32,
            "parallel.strategy": "single", "parallel.threads": 2, "parallel.runtime": "torch"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=CONFIG["search"]["n_trials"])
    trials = parser.parse_args().trials
    space = SpaceSpec.model_validate(CONFIG["space"])
    pairs = [student(w, d, init) for w, d in HEAD_TO_HEAD for init in ("teacher", "scratch")]
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        summary, config = run_search(Path(root), "minilm", task="minilm-topics",
                                     space=space, enqueue=[*anchor_params(space), *pairs],
                                     evaluation=CONFIG["evaluation"], constraints=CONFIG["constraints"], n_trials=trials)
        report(summary, load_existing_study(config.storage_url, config.search.study_name), trials)


def report(summary: RunSummary, study: optuna.Study, trials: int) -> None:
    teacher = dict(study.user_attrs["baseline"]["metrics"], accuracy_drop=0.0)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    hours = summary.seconds / 3600
    print(f"# MiniLM (pretrained all-MiniLM-L6-v2, minilm-topics), configs/minilm.yaml search, {trials} trials, batch "
          f"64 x 32 ids -- {provenance()}")
    print(f"Search loop {summary.seconds / 60:.1f} min ({summary.evaluated / hours:.0f} trials/hour): "
          f"{summary.completed} complete, {summary.failed} failed, {summary.pruned} stopped early, "
          f"{summary.rejected} rejected, {summary.duplicates} repeated proposals answered from the study.\n")
    front_table(study, teacher)
    print("\nStudents started from the teacher vs from scratch (same width, depth, distillation and epochs):\n")
    print("| student | from teacher: accuracy | from scratch: accuracy | distill s (teacher / scratch) |")
    print("|---|---|---|---|")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    by_params = {tuple(sorted(t.params.items())): t for t in finished}
    gains = []
    for width, depth in HEAD_TO_HEAD:
        found = [by_params.get(tuple(sorted(student(width, depth, init).items()))) for init in ("teacher", "scratch")]
        if None in found:
            continue
        (cut, cut_text), (scratch, scratch_text) = (last_accuracy(t) for t in found)  # type: ignore[arg-type]
        gains.append(cut - scratch)
        seconds = [t.user_attrs.get("metrics", {}).get("seconds_distill") for t in found]  # type: ignore[union-attr]
        print(f"| w{width:g} d{depth} | {cut_text} | {scratch_text} | "
              + " / ".join(f"{s:.0f}" if s else "-" for s in seconds) + " |")
    errors = [t for t in study.trials if t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "error"]
    goal("MiniLM: trials failing with an error", f"{len(errors)} of {len(study.trials)}", "0", not errors)
    found = [t for t in complete if shrinks(t, teacher, 3.0, 4.0)]
    best = f"#{found[0].number} {found[0].user_attrs['summary']}" if found else "none"
    goal("MiniLM: a trial >= 3x smaller and >= 4x faster (p50) at drop <= 1 %",
         f"{len(found)} of {len(complete)} trials (first: {best})", ">= 1", bool(found))
    if gains:
        goal("MiniLM: accuracy of teacher-initialised over from-scratch students (mean gain)",
             f"{100 * statistics.mean(gains):+.1f} points", "> 0", statistics.mean(gains) > 0)


def last_accuracy(trial: optuna.trial.FrozenTrial) -> tuple[float, str]:
    """The trial's validation accuracy, or, for one stopped early, the last it reported."""
    if trial.state == TrialState.COMPLETE:
        accuracy = trial.user_attrs["metrics"]["accuracy"]
        return accuracy, f"{accuracy:.4f}"
    point, accuracy = list(trial.user_attrs.get("accuracy_curve", {"-": float("nan")}).items())[-1]
    return accuracy, f"{accuracy:.4f} (stopped early at {point})"


if __name__ == "__main__":
    main()
