"""Every common model family through a real search: which techniques serve it, measured.

For each family of ``tests/tasks/families.py`` (tiny random-init Hugging Face BERT, RoBERTa,
DistilBERT, GPT-2, LLaMA and ViT classifiers trained by slimsearch, a torchvision-style
residual CNN, an LSTM) and a regression MLP scored by R^2 a 10-trial search runs with the real driver: the anchors, then one
trial per technique enqueued (prune 0.5, a student cut from the teacher for transformers,
torch int8, onnxruntime int8, OpenVINO int8, tensor parallel over 2 ranks), then the
sampler's own proposals. The table says, per family, whether each technique produced a
complete trial (``ok``), was rejected (with the reason) or failed, whether MACs were
counted for every Linear layer, and the smallest front point within 0.01 of the teacher
on the task's own metric (accuracy, or R^2). Judged by the model-families issue: no trial failed with an error, the teacher's
int8 anchor is complete, and a point >= 2x smaller at <= 1 % drop exists.

    .venv/bin/python benchmarks/families.py [--trials 10] [--family gpt2 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.tasks.families

from slimsearch.search.objectives import QualityMetric  # noqa: E402
from slimsearch.search.store import records  # noqa: E402
from slimsearch.search.store.study import load_existing_study  # noqa: E402
from slimsearch.spaces import SpaceSpec, anchor_params, teacher_params  # noqa: E402
from slimsearch.spaces.sampling import runtime_choices  # noqa: E402

from common import cell, goal, provenance, run_search  # noqa: E402

TRANSFORMERS = {"bert": "bert", "roberta": "roberta", "distilbert": "distilbert", "gpt2": "gpt2", "llama": "llama",
                "vit": "vit_task"}
FAMILIES = {**TRANSFORMERS, "resnet": "resnet_task", "lstm": "lstm_task"}
REGRESSION = {"regression-r2": "tests.tasks.regression:make_r2_task"}
"""A tabular MLP on a continuous target, judged by its own metric (R^2, maximised)."""
TECHNIQUES = ("prune 0.5", "cut student", "torch int8", "ORT int8", "OV int8", "TP x2")


def space_for(family: str) -> SpaceSpec:
    student = ({"init": ["teacher"], "width": [0.5], "depth": [1], "temperature": [2.0], "alpha": [0.5]}
               if family in TRANSFORMERS else {"width": [0.5], "depth": [1, 2], "temperature": [2.0], "alpha": [0.5]})
    return SpaceSpec.model_validate({
        "prune": {"low": 0.0, "high": 0.5, "step": 0.25},
        "quantize": {"bits": [32, 8]},
        "student": student,
        "parallel": {"strategies": ["single", "tensor_parallel"], "degree": [2], "threads": [1],
                     "runtimes": ["torch", "onnxruntime", "openvino"]},
    })


def technique_params(space: SpaceSpec, family: str) -> dict[str, dict[str, object]]:
    """One candidate per technique, as Optuna params of ``space``."""
    fp32, int8 = teacher_params(space, 32), teacher_params(space, 8)
    assert fp32 and int8
    runtime32, runtime8 = runtime_choices(space, 32), runtime_choices(space, 8)
    assert runtime32 and runtime8
    found = {
        "prune 0.5": {**fp32, "prune.ratio": 0.5},
        "torch int8": int8,
        "ORT int8": {**int8, runtime8[0]: "onnxruntime"},
        "OV int8": {**int8, runtime8[0]: "openvino"},
        "TP x2": {key: value for key, value in fp32.items() if key not in ("parallel.threads", runtime32[0])}
                 | {"parallel.strategy": "tensor_parallel", "parallel.degree": 2, "parallel.rank_threads": 1},
    }
    if family in TRANSFORMERS:
        found["cut student"] = {**anchor_params(space)[-1], "quantize.bits": 32, runtime32[0]: "torch"}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--family", nargs="*", default=[*FAMILIES, *REGRESSION])
    args = parser.parse_args()
    print(f"**Model families, {args.trials}-trial searches -- {provenance()}**\n")
    print("| family | trials (complete / failed / rejected) | " + " | ".join(TECHNIQUES)
          + " | MACs | teacher int8 | smallest at metric drop <= 0.01 |")
    print("|---" * (len(TECHNIQUES) + 5) + "|")
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="slimsearch-families-") as root:
        for family in args.family:
            space = space_for(family)
            techniques = technique_params(space, family)
            anchors = anchor_params(space)[:2]
            task = REGRESSION.get(family) or f"tests.tasks.families:{FAMILIES[family]}"
            metric = "r2" if family in REGRESSION else "accuracy"
            run_search(Path(root), family, task=task, space=space, enqueue=[*anchors, *techniques.values()],
                       objectives={metric: "maximize", "latency_p50_ms": "minimize", "memory_mb": "minimize"},
                       constraints=[f"{metric}_drop <= 0.01"], n_trials=args.trials,
                       evaluation={"repeats": 10, "rounds": 2})
            verdicts.append(report(family, Path(root) / family, techniques))
    print("\nDistinct rejection reasons (rejections use no budget; counts above include repeated proposals):\n")
    for family, reasons in REJECTIONS.items():
        for reason in reasons:
            print(f"- {family}: {reason}")
    print()
    goal("families: trials failed with an error", f"{sum(v[0] for v in verdicts)}", "0",
         sum(v[0] for v in verdicts) == 0)
    goal("families: teacher int8 anchor complete", f"{sum(v[1] for v in verdicts)} of {len(verdicts)}",
         f"{len(verdicts)}", all(v[1] for v in verdicts))
    goal("families: a point >= 2x smaller at metric drop <= 0.01", f"{sum(v[2] for v in verdicts)} of {len(verdicts)}",
         f"{len(verdicts)}", all(v[2] for v in verdicts))


def report(family: str, output: Path, techniques: dict[str, dict[str, object]]) -> tuple[int, bool, bool]:
    """One table row; returns (errors, teacher int8 complete, >= 2x smaller at <= 1 % drop)."""
    study = load_existing_study(f"sqlite:///{output / 'optuna.db'}", family)
    teacher = study.user_attrs["baseline"]["metrics"]
    quality = QualityMetric.of(study.user_attrs)
    trials = [t for t in study.trials if t.state.is_finished()]
    kinds = [t.user_attrs.get(records.FAILURE_KIND) for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    cells = []
    for name in TECHNIQUES:
        params = techniques.get(name)
        trial = next((t for t in trials if params is not None and t.params == params), None)
        if trial is None:
            cells.append("n/a")
        elif trial.state == TrialState.COMPLETE:
            cells.append("ok")
        elif trial.state == TrialState.PRUNED:  # built and measured far enough to miss the constraint
            cells.append(f"ok, stopped early ({trial.user_attrs.get(records.PRUNED_RULE, '')})")
        else:
            kind = trial.user_attrs.get(records.FAILURE_KIND, trial.state.name.lower())
            cells.append(f"{kind}: {trial.user_attrs.get(records.FAILURE_REASON, '')[:90]}")
    int8 = next((t for t in trials if t.params == techniques["torch int8"]), None)
    sizes = [teacher["model_mb"] / t.user_attrs[records.METRICS]["model_mb"] for t in complete
             if t.user_attrs[records.METRICS][quality.drop] <= 0.01]
    macs = int(teacher.get("macs", 0))
    print(f"| {family} | {len(complete)} / {kinds.count('error')} / {kinds.count('rejected')} | "
          + " | ".join(cell(c) for c in cells)
          + f" | {macs:,} | {'ok' if int8 and int8.state == TrialState.COMPLETE else 'no'} | "
          + (f"{max(sizes):.2f}x" if sizes else "none") + " |")
    reasons = sorted({t.user_attrs.get(records.FAILURE_REASON, "") for t in trials
                      if t.user_attrs.get(records.FAILURE_KIND) == "rejected"})
    REJECTIONS[family] = reasons
    return kinds.count("error"), bool(int8 and int8.state == TrialState.COMPLETE), bool(sizes and max(sizes) >= 2)


REJECTIONS: dict[str, list[str]] = {}
"""Each family's distinct rejection reasons (the sampler may repeat a rejected candidate)."""


if __name__ == "__main__":
    main()
