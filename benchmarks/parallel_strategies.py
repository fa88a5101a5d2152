"""Parallel strategies at degree 2 vs one process, for both built-in tasks (fp32 teachers).

Prints latency and per-rank memory for each plan; the ratio is p50 against ``single``
with as many threads as the plan uses cores. On a 2-core CPU no plan is expected to
win: that is the finding to report, not to hide.

    .venv/bin/python benchmarks/parallel_strategies.py
"""

from __future__ import annotations

from slimsearch.spaces import InvalidCandidate

from common import provenance, serve, teacher

PLANS = [("single", 1, 1), ("single", 1, 2), ("data_parallel", 2, 1), ("tensor_parallel", 2, 1), ("pipeline_parallel", 2, 1)]
MIB = 1024 * 1024


def main() -> None:
    print(f"# parallel strategies, batch 64, fp32 teacher -- {provenance()}")
    print("| task | strategy | ranks x threads | p50 ms | p95 ms | vs single same cores | peak MiB per rank | weights KiB per rank | output error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task_name in ("digits", "digits-transformer"):
        task, model = teacher(task_name)
        reference: dict[int, float] = {}
        for strategy, degree, threads in PLANS:
            label = f"| {task_name} | {strategy} | {degree} x {threads} |"
            try:
                m = serve(model, task, strategy, degree, threads)
            except InvalidCandidate as exc:
                print(f"{label} rejected: {exc} | | | | | |")
                continue
            cores = degree * threads
            if strategy == "single":
                reference[cores] = m.latency.p50_ms
            ratio = m.latency.p50_ms / reference[cores]
            peaks = " / ".join(f"{p / MIB:.0f}" for p in m.per_rank_peak_bytes)
            weights = " / ".join(f"{w / 1024:.0f}" for w in m.per_rank_weight_bytes)
            noisy = " (noisy)" if m.noisy else ""
            print(f"{label} {m.latency.p50_ms:.2f}{noisy} | {m.latency.p95_ms:.2f} | {ratio:.2f}x | {peaks} | {weights} | {m.output_error:.1e} |")


if __name__ == "__main__":
    main()
