"""Measurement noise: the same artifact measured 10 times in fresh probes on an idle machine.

Judged by the coefficient of variation of the ten medians (goal <= 5 %).

    .venv/bin/python benchmarks/latency_noise.py
"""

from __future__ import annotations

import statistics

from slimsearch.pipelines.quantize import quantize

from common import goal, provenance, serve, teacher

REPEATS = 10


def main() -> None:
    print(f"# latency noise, batch 64, {REPEATS} fresh probes per artifact -- {provenance()}")
    print("| task | bits | medians ms | CV of the median | noisy probes |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for task_name in ("digits", "digits-transformer"):
        task, model = teacher(task_name)
        for bits in (32, 8):
            served = quantize(model, bits, None, task.train[0][:256]).serving
            runs = [serve(served, task) for _ in range(REPEATS)]
            medians = [r.latency.p50_ms for r in runs]
            cv = statistics.stdev(medians) / statistics.mean(medians)
            noisy = sum(r.noisy for r in runs)
            worst = max(worst, cv)
            print(f"| {task_name} | {bits} | {min(medians):.2f}-{max(medians):.2f} | {100 * cv:.1f} % | {noisy} |")
    goal("latency CV of the median over fresh probes, worst artifact", f"{100 * worst:.1f} %", "<= 5 %", worst <= 0.05)


if __name__ == "__main__":
    main()
