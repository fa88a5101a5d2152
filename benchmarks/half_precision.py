"""16-bit MiniLM on this CPU: measured as slow where it is slow, never a failed trial.

A CPU without native fp16 arithmetic (AVX2-only EPYCs: no ``avx512_fp16``; bf16 only with
``avx512_bf16`` / AMX) runs a float16 transformer through conversions, seconds per batch.
The call-count probe timed such a model out (``serving probe timed out after 300s``) and
recorded a failed trial; the probe's time budget now times it in the rounds that fit.
This runs a search of the pretrained MiniLM task over the teacher at fp32, float16 and
bfloat16 (torch runtime, 2 threads), prints the CPU's 16-bit flags and every trial's
outcome and latency, and is judged by the trials failed with an error (goal 0).

    .venv/bin/python benchmarks/half_precision.py      # ~10 min on 2 cores (the teacher's fine-tuning once)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from optuna.trial import TrialState

from slimsearch.search.store import records
from slimsearch.search.store.study import load_existing_study
from slimsearch.spaces import SpaceSpec

from common import cell, goal, provenance, run_search

HALF_FLAGS = ("avx512_fp16", "avx512_bf16", "amx_bf16", "f16c")
SPACE = SpaceSpec.model_validate({
    "student": {"keep_teacher": True, "distill": False},
    "prune": {"low": 0.0, "high": 0.0},
    "lowrank": {"ratios": [0.0]},
    "quantize": {"bits": [32, 16], "float16_dtypes": ["float16", "bfloat16"]},
    "parallel": {"strategies": ["single"], "threads": [2], "runtimes": ["torch"]},
})


def cpu_flags() -> str:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in HALF_FLAGS)


def main() -> None:
    print(f"# MiniLM at fp32, float16 and bfloat16 -- {provenance()}")
    print(f"CPU 16-bit support: {cpu_flags()}")
    with tempfile.TemporaryDirectory(prefix="slimsearch-half-") as root:
        enqueue = [{"quantize.bits": 16, "quantize.float_dtype": dtype} for dtype in ("float16", "bfloat16")]
        summary, config = run_search(Path(root), "half", task="minilm-topics", space=SPACE, enqueue=enqueue,
                                     n_trials=3, sampler="random")
        study = load_existing_study(config.storage_url, "half")
        print("| trial | configuration | outcome | latency p50 ms | p95 ms | timing rounds | first request s |")
        print("|---|---|---|---|---|---|---|")
        errors = 0
        for trial in study.trials:
            m = trial.user_attrs.get(records.METRICS, {})
            outcome = records.outcome(trial)
            errors += trial.state == TrialState.FAIL and trial.user_attrs.get(records.FAILURE_KIND) == "error"
            reason = trial.user_attrs.get(records.FAILURE_REASON, "")
            latency = (f"{m['latency_p50_ms']:.1f} | {m['latency_p95_ms']:.1f} | "
                       f"{m['latency_rounds_total']:.0f} | {m['serving_first_call_s']:.2f}") if "latency_p50_ms" in m \
                else "- | - | - | -"
            print(f"| {trial.number} | {cell(trial.user_attrs.get(records.SUMMARY, ''))} | "
                  f"{cell(outcome + (': ' + reason if reason else ''))} | {latency} |")
        print(f"search: {summary.evaluated} trials, failures by reason: {summary.failure_reasons or 'none'}")
    goal("MiniLM trials at 16 bits failed with an error", str(errors), "0", errors == 0)


if __name__ == "__main__":
    main()
