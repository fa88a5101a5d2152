"""Measurement noise: the same artifact measured 10 times in fresh probes on an idle machine.

Judged by the coefficient of variation of the ten calibrated medians (goal <= 5 %); the
raw medians of the same probes (the calls as timed, no reference pairing) are printed
beside them. As in a study, the reference is calibrated once, by a first probe of the
first teacher, and every probe is scaled to it.

    .venv/bin/python benchmarks/latency_noise.py
"""

from __future__ import annotations

import dataclasses
import statistics

from slimsearch.evaluators import TimingProtocol
from slimsearch.pipelines.quantize import quantize

from common import goal, provenance, serve, teacher

REPEATS = 10


def main() -> None:
    print(f"# latency noise, batch 64, {REPEATS} fresh probes per artifact -- {provenance()}")
    calibration = serve(teacher("digits")[1], teacher("digits")[0])
    protocol = dataclasses.replace(TimingProtocol(), reference_ms=calibration.window_reference_ms)
    print(f"reference workload calibrated at {calibration.window_reference_ms:.3f} ms")
    print("| task | bits | calibrated medians ms | CV calibrated | raw medians ms | CV raw | noisy probes |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for task_name in ("digits", "digits-transformer"):
        task, model = teacher(task_name)
        for bits in (32, 8):
            served = quantize(model, bits, None, task.train[0][:256]).serving
            runs = [serve(served, task, protocol=protocol) for _ in range(REPEATS)]
            medians = [r.latency.p50_ms for r in runs]
            raw = [r.raw_latency.p50_ms for r in runs]
            cv, raw_cv = (statistics.stdev(v) / statistics.mean(v) for v in (medians, raw))
            noisy = sum(r.noisy for r in runs)
            worst = max(worst, cv)
            print(f"| {task_name} | {bits} | {min(medians):.2f}-{max(medians):.2f} | {100 * cv:.1f} % "
                  f"| {min(raw):.2f}-{max(raw):.2f} | {100 * raw_cv:.1f} % | {noisy} |")
    goal("latency CV of the median over fresh probes, worst artifact", f"{100 * worst:.1f} %", "<= 5 %", worst <= 0.05)


if __name__ == "__main__":
    main()
