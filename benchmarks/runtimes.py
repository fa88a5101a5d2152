"""Serving runtimes compared on each built-in teacher: torch, onnxruntime, OpenVINO, fp32 and int8.

Each teacher (unpruned, the task's own) is built for every runtime at 32 and 8 bits the
way a search builds it (torch: TorchScript, FX static or dynamic int8; onnxruntime: ONNX,
its own int8; openvino: IR, NNCF int8 with f32 inference precision), its validation
accuracy measured on the served artifact, and its latency at batch 64 measured in the
isolated probe with 2 threads. Ratios are against torch fp32 of the same run. Judged by
the OpenVINO issue's goal: on MiniLM, OpenVINO int8 p50 against the best other runtime at
an accuracy drop no larger than its own.

    .venv/bin/python benchmarks/runtimes.py [--task minilm-topics]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from slimsearch.evaluators import LocalPlacement, ServingRequest, TimingProtocol, plan_ranks, save_artifact
from slimsearch.spaces import Candidate

from common import BATCH, goal, pipeline, provenance

TASKS = ("digits", "digits-transformer", "minilm-topics")
RUNTIMES = ("torch", "onnxruntime", "openvino")
THREADS = 2


def measure(built_pipeline, runtime: str, bits: int) -> dict[str, float | str]:  # noqa: ANN001 - CompressionPipeline
    task = built_pipeline.task
    built = built_pipeline.build(Candidate(None, 0.0, bits, None, "single", 1, THREADS, runtime=runtime))
    batch = task.serving_batch(BATCH)
    placement = LocalPlacement()
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as workdir:
        artifact = save_artifact(runtime, built.serving, batch, Path(workdir) / "model.pt")
        accuracy = placement.accuracy(artifact, task.val, task.metric)
        plan = plan_ranks(built.serving, batch, "single", 1, artifact)
        served = placement.measure(artifact, plan, ServingRequest(batch, THREADS, TimingProtocol(), 600))
    return {"path": built.quant_path, "accuracy": accuracy, "p50": served.latency.p50_ms, "p95": served.latency.p95_ms,
            "mb": built.model_bytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", action="append", choices=TASKS)
    tasks = parser.parse_args().task or list(TASKS)
    print(f"# serving runtimes on each teacher, batch {BATCH}, {THREADS} threads -- {provenance()}")
    for task_name in tasks:
        built_pipeline = pipeline(task_name)
        rows = {(runtime, bits): measure(built_pipeline, runtime, bits) for runtime in RUNTIMES for bits in (32, 8)}
        base = rows[("torch", 32)]
        print(f"\n{task_name}: p50 / p95 ms, model MiB, validation accuracy; ratio = torch fp32 p50 / row p50\n")
        print("| runtime | bits | path | p50 ms | p95 ms | vs torch fp32 | model MiB | accuracy | drop |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (runtime, bits), row in rows.items():
            print(f"| {runtime} | {bits} | {row['path']} | {row['p50']:.2f} | {row['p95']:.2f} | "
                  f"{base['p50'] / row['p50']:.2f}x | {row['mb']:.2f} | {row['accuracy']:.4f} | "
                  f"{100 * (base['accuracy'] - row['accuracy']):+.2f} % |")
        if task_name == "minilm-topics":
            ov = rows[("openvino", 8)]
            drop = base["accuracy"] - ov["accuracy"]
            others = [row for (runtime, _), row in rows.items()
                      if runtime != "openvino" and base["accuracy"] - row["accuracy"] <= drop + 1e-9]
            best = min(others, key=lambda row: row["p50"])
            goal("MiniLM: OpenVINO int8 p50 vs the best other runtime at equal or smaller accuracy drop",
                 f"{best['p50'] / ov['p50']:.2f}x ({ov['p50']:.1f} vs {best['p50']:.1f} ms, {best['path']})", "> 1",
                 best["p50"] > ov["p50"])


if __name__ == "__main__":
    main()
