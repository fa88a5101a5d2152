"""Runs in a fresh process: load a TorchScript artifact, serve batches, time them, read peak RSS.

Started by :func:`slimsearch.evaluators.serving.measure_serving` as
``python -m slimsearch.evaluators.serving_probe JOB.json RESULT.json``. The whole
measurement holds the host timing lock. ``single`` serves in this process;
``data_parallel`` spawns ``degree`` gloo ranks on 127.0.0.1, rank 0 scatters the batch,
every rank runs its shard and rank 0 gathers the outputs; that whole round trip is what
is timed. Each rank is pinned to its own cores with ``threads`` intra-op threads.
Timing runs in rounds; a round during which other work kept the rank's cores busy is
discarded and another is timed (``cpu_load``), up to ``max_rounds``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slimsearch.evaluators.cpu_load import outside_load, snapshot
from slimsearch.evaluators.isolation import hardware_identity, timing_lock
from slimsearch.evaluators.latency import time_calls
from slimsearch.evaluators.memory import current_rss_bytes, file_rss_bytes, peak_rss_bytes, reset_peak_rss


@dataclass(frozen=True)
class ServingJob:
    artifact: str
    input_shape: list[int]
    batch_size: int
    strategy: str
    degree: int
    threads: int
    warmup: int
    repeats: int
    """Timed calls per round."""
    rounds: int
    """Undisturbed rounds wanted."""
    max_rounds: int
    max_outside_load: float
    """A round whose cores were busier than this with other work is disturbed."""


def main(job_path: str, result_path: str) -> None:
    job = ServingJob(**json.loads(Path(job_path).read_text()))
    host = hardware_identity()  # before ranks pin themselves, so "cores" is the host's
    lock = timing_lock()
    asked = time.time()
    with lock:
        lock_wait_s = time.time() - asked
        ranks = _serve_single(job) if job.degree == 1 else _serve_ranks(job)
    result = {
        "ranks": ranks,
        "lock_wait_s": lock_wait_s,
        "hardware": {**host, "threads_per_rank": str(job.threads), "ranks": str(job.degree),
                     "cores_used": str(job.threads * job.degree)},
    }
    Path(result_path).write_text(json.dumps(result))


def _serve_single(job: ServingJob) -> list[dict[str, Any]]:
    return [_rank_main(0, job, port=None)]


def _serve_ranks(job: ServingJob) -> list[dict[str, Any]]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="slimsearch-ranks-") as outdir:
        mp.spawn(_rank_entry, args=(job, port, outdir), nprocs=job.degree, join=True)
        return [json.loads((Path(outdir) / f"rank{r}.json").read_text()) for r in range(job.degree)]


def _rank_entry(rank: int, job: ServingJob, port: int, outdir: str) -> None:
    (Path(outdir) / f"rank{rank}.json").write_text(json.dumps(_rank_main(rank, job, port)))


def _rank_main(rank: int, job: ServingJob, port: int | None) -> dict[str, Any]:
    torch.set_num_threads(job.threads)
    cores = _pin_cores(rank, job.threads)
    if port is not None:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=job.degree)
    baseline, baseline_file = current_rss_bytes(), file_rss_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still loads fine
        model = torch.jit.load(job.artifact).eval()
    batch = torch.randn(job.batch_size, *job.input_shape)
    step = _step(model, batch, rank, job.degree)
    with torch.inference_mode():
        time_calls(step, job.warmup, 0)
        reset_peak_rss()
        start_ns = time.time_ns()
        rounds = _timed_rounds(step, job, cores, distributed=port is not None)
        end_ns = time.time_ns()
    peak, file_growth = peak_rss_bytes(), file_rss_bytes() - baseline_file
    if port is not None:
        dist.destroy_process_group()
    return {"rank": rank, "baseline_bytes": baseline, "peak_bytes": peak, "file_growth_bytes": file_growth,
            "rounds": rounds, "window_ns": [start_ns, end_ns]}


def _timed_rounds(step: Callable[[], Any], job: ServingJob, cores: list[int], distributed: bool) -> list[dict[str, Any]]:
    """Time rounds until ``job.rounds`` undisturbed ones or ``job.max_rounds`` in all.

    Rank 0 decides whether another round is needed and broadcasts it, so every rank runs
    the same number of collective steps.
    """
    rounds: list[dict[str, Any]] = []
    while True:
        before = snapshot(cores)
        samples = time_calls(step, 0, job.repeats)
        rounds.append({"samples_ms": samples, "outside_load": outside_load(before, snapshot(cores))})
        clean = sum(r["outside_load"] <= job.max_outside_load for r in rounds)
        more = torch.tensor([int(clean < job.rounds and len(rounds) < job.max_rounds)])
        if distributed:
            dist.broadcast(more, src=0)
        if not more.item():
            return rounds


def _step(model: torch.jit.ScriptModule, batch: torch.Tensor, rank: int, degree: int) -> Callable[[], Any]:
    if degree == 1:
        return lambda: model(batch)
    shard = torch.empty(batch.shape[0] // degree, *batch.shape[1:])

    def data_parallel_step() -> Any:
        dist.scatter(shard, list(batch.chunk(degree)) if rank == 0 else None, src=0)
        out = model(shard)
        gathered = [torch.empty_like(out) for _ in range(degree)] if rank == 0 else None
        dist.gather(out, gathered, dst=0)
        return torch.cat(gathered) if gathered else out

    return data_parallel_step


def _pin_cores(rank: int, threads: int) -> list[int]:
    """Give rank ``rank`` its own ``threads`` cores so ranks do not contend for one core;
    return the cores it runs on (watched for outside load)."""
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[rank * threads : (rank + 1) * threads]
    if len(mine) == threads:
        os.sched_setaffinity(0, mine)
        return mine
    return cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def job_dict(job: ServingJob) -> dict[str, Any]:
    return asdict(job)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
