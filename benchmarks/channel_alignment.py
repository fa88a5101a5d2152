"""What keeping pruned channel counts at multiples of 8 buys when the model is served.

The digits teacher (trained, from the bench cache) is pruned at each ratio twice: with the
product's alignment (``pipelines/pruning.py``: kept counts rounded to the nearest multiple
of ``CHANNEL_MULTIPLE``) and without it (the multiple set to 1, what torch-pruning keeps
from the ratio alone). Both are served fp32 at batch 64 in the isolated probe on torch and
onnxruntime at 1 and 2 threads, one after the other in the same run; printed: the channel
counts, MACs and p50, and unaligned p50 / aligned p50 (above 1: the alignment is faster).
The unpruned teacher is the reference row. Weights are untrained after pruning (latency
does not depend on them), so nothing trains here.

    .venv/bin/python benchmarks/channel_alignment.py
"""

from __future__ import annotations

import copy

from torch import nn

from slimsearch.pipelines import pruning
from slimsearch.pipelines.stages import count_macs_and_params

from common import BATCH, goal, provenance, serve, teacher

RATIOS = (0.2, 0.4, 0.6)
RUNTIMES = ("torch", "onnxruntime")
THREADS = (1, 2)


def pruned(model: nn.Module, task, ratio: float, multiple: int) -> nn.Module:  # noqa: ANN001 - Task
    original, pruning.CHANNEL_MULTIPLE = pruning.CHANNEL_MULTIPLE, multiple
    try:
        return pruning.prune_channels(copy.deepcopy(model), pruning.PruningChoice(ratio), task)
    finally:
        pruning.CHANNEL_MULTIPLE = original


def channels(model: nn.Module) -> tuple[int, ...]:
    return tuple(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def main() -> None:
    print(f"# pruned channel alignment, digits teacher fp32, batch {BATCH} -- {provenance()}\n")
    task, model = teacher("digits")
    example = task.serving_batch(BATCH)
    models = {("teacher", 0.0): model}
    for ratio in RATIOS:
        models[("aligned", ratio)] = pruned(model, task, ratio, pruning.CHANNEL_MULTIPLE)
        models[("unaligned", ratio)] = pruned(model, task, ratio, 1)
    p50 = {(key, runtime, threads): serve(built, task, threads=threads, runtime=runtime).latency.p50_ms
           for key, built in models.items() for runtime in RUNTIMES for threads in THREADS}
    print("| model | ratio | channels | MMACs | " + " | ".join(f"{r} t{t} p50 ms" for r in RUNTIMES for t in THREADS) + " |")
    print("|---|---|---|---|" + "---|" * (len(RUNTIMES) * len(THREADS)))
    for key, built in models.items():
        macs = count_macs_and_params(built, example[:1])[0] / 1e6
        cells = " | ".join(f"{p50[(key, r, t)]:.3f}" for r in RUNTIMES for t in THREADS)
        print(f"| {key[0]} | {key[1]:g} | {channels(built)} | {macs:.2f} | {cells} |")
    print()
    for runtime in RUNTIMES:
        for threads in THREADS:
            ratios = [p50[(("unaligned", r), runtime, threads)] / p50[(("aligned", r), runtime, threads)] for r in RATIOS]
            print(f"{runtime} t{threads}: unaligned / aligned p50 at ratios {RATIOS}: "
                  + ", ".join(f"{value:.2f}x" for value in ratios))
    worst = min(p50[(("unaligned", r), "onnxruntime", t)] / p50[(("aligned", r), "onnxruntime", t)]
                for r in RATIOS for t in THREADS)
    goal("onnxruntime fp32: unaligned / aligned p50, smallest over ratios and threads", f"{worst:.2f}x", ">= 1", worst >= 1)


if __name__ == "__main__":
    main()
