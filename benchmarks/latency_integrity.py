"""Do in-search latencies survive concurrent trials? Spearman rho vs isolated re-measurement.

Two "trials" run at once, as two workers would: each alternates CPU-heavy work (a
training epoch, standing in for distillation or fine-tuning) with a serving measurement
of its next artifact, so one trial's training overlaps the other's timed window. The
timing lock serialises the windows; the rounds protocol re-times rounds disturbed by the
other trial. Afterwards every artifact is re-measured alone. Judged by Spearman rho
between the two sets of medians (goal >= 0.95 over >= 10 artifacts) and by whether any
two timed windows overlapped.

    .venv/bin/python benchmarks/latency_integrity.py
"""

from __future__ import annotations

import threading

import torch
from scipy.stats import spearmanr

from slimsearch.evaluators import ServingMeasurement
from slimsearch.pipelines.digits import DigitsCNN
from slimsearch.pipelines.digits_transformer import DigitsTransformer
from slimsearch.pipelines.quantize import quantize
from slimsearch.pipelines.training import train_model

from common import goal, provenance, serve, teacher

SHAPES = [(0.25, 2), (0.5, 2), (0.5, 3), (0.75, 3), (1.0, 3), (1.0, 2)]


def artifacts(task) -> list[tuple[str, torch.nn.Module]]:
    models = []
    for width, depth in SHAPES:
        torch.manual_seed(0)
        cnn = DigitsCNN(width, depth).eval()
        models.append((f"cnn w{width} d{depth} fp32", cnn))
        models.append((f"cnn w{width} d{depth} int8", quantize(cnn, 8, None, task.train[0][:256]).serving))
    for width in (0.5, 1.0):
        torch.manual_seed(0)
        models.append((f"transformer w{width} d2 fp32", DigitsTransformer(width, 2).eval()))
    return models


def main() -> None:
    task, _ = teacher("digits")
    named = artifacts(task)
    in_search: dict[str, ServingMeasurement] = {}

    def trial_worker(share: list[tuple[str, torch.nn.Module]]) -> None:
        for name, model in share:
            train_model(DigitsCNN(0.5, 3), task.train, 1, seed=0)  # the other trial's heavy stage
            in_search[name] = serve(model, task)

    workers = [threading.Thread(target=trial_worker, args=(named[i::2],)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    isolated = {name: serve(model, task) for name, model in named}

    windows = sorted(w for m in in_search.values() for w in m.windows_ns)
    overlaps = sum(later[0] < earlier[1] for earlier, later in zip(windows, windows[1:]))
    names = [name for name, _ in named]
    rho = spearmanr([in_search[n].latency.p50_ms for n in names], [isolated[n].latency.p50_ms for n in names]).statistic
    print(f"# latency integrity under 2 concurrent trials, batch 64 -- {provenance()}")
    print("| artifact | in-search p50 ms | rounds clean/total | noisy | isolated p50 ms | ratio |")
    print("|---|---|---|---|---|---|")
    for n in names:
        s, i = in_search[n], isolated[n]
        print(f"| {n} | {s.latency.p50_ms:.2f} | {s.rounds_clean}/{s.rounds_total} | {s.noisy} | "
              f"{i.latency.p50_ms:.2f} | {s.latency.p50_ms / i.latency.p50_ms:.2f} |")
    print(f"Overlapping timed windows: {overlaps}.")
    goal(f"in-search vs isolated p50 under 2 concurrent trials, Spearman rho over {len(names)} artifacts",
         f"{rho:.3f}", ">= 0.95", rho >= 0.95)


if __name__ == "__main__":
    main()
