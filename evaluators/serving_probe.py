"""Runs in a fresh process: load what each rank serves, serve batches, time them, read peak RSS.

Started as ``python -m slimsearch.evaluators.serving_probe PARENT_PID`` (``probe_processes``:
usually before its job exists), it reads the paths of JOB.json and RESULT.json from stdin
(:func:`slimsearch.evaluators.serving.measure_serving` writes them) and ends quietly when
stdin closes without a job. The whole
measurement holds the host timing lock. ``single`` serves in this process; the parallel
strategies spawn ``degree`` gloo ranks on 127.0.0.1 and time rank 0's round trip
(``parallel_steps``). Each rank is pinned to its own cores with ``threads`` intra-op
threads. Memory is the peak RSS of the warm-up's calls, before the reference workload
first runs in the process. Timing runs in rounds of candidate blocks paired with a reference workload
(``paired_timing``), sized by a budget in seconds; a round during which other work kept
the rank's cores busy is discarded and, after a growing pause (bounded by
``busy_wait_s``), another is timed (``cpu_load``), up to ``max_rounds``. The probe
writes its phase to ``progress_file`` so a timeout can say what was too slow. After the
timed window, rank 0 compares the parallel output with the single-process artifact, and a
compiled torch.export program's output with the same program uncompiled. The first call
is timed on its own (``first_call_s``: cold start, inductor compilation included).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slimsearch.evaluators.cpu_load import outside_load, snapshot
from slimsearch.evaluators.isolation import hardware_identity, timing_lock
from slimsearch.evaluators.latency import time_calls
from slimsearch.evaluators.paired_timing import (BLOCKS_PER_ROUND, REFERENCE_WARMUP_CALLS, TimingPlan, reference_speeds,
                                                 reference_workload, rounds_agree)
from slimsearch.evaluators.runtimes import load_artifact, runtime_for_artifact
from slimsearch.evaluators.memory import current_rss_bytes, file_rss_bytes, peak_rss_bytes, reset_peak_rss
from slimsearch.evaluators.parallel_steps import load_rank_model, local_weight_bytes, make_step

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when the thread that started it ends."""


@dataclass(frozen=True)
class ServingJob:
    artifact: str
    """The single-process TorchScript model (the reference parallel outputs are checked against)."""
    rank_files: list[str]
    batch_file: str
    """The request every timed call serves (real rows in the task's dtype), saved by the caller."""
    strategy: str
    degree: int
    threads: int
    warmup_s: float
    round_s: float
    """Seconds of timed candidate calls per round."""
    rounds: int
    """Undisturbed rounds wanted."""
    max_rounds: int
    max_outside_load: float
    """A round whose cores were busier than this with other work is disturbed."""
    busy_wait_s: float
    """Longest total pause between disturbed rounds, waiting for the host to quieten."""
    progress_file: str
    deadline: float
    """Unix time by which timing must be over (before the caller's timeout): a slow model
    is timed in fewer rounds instead of being killed."""
    micro_batches: int = 1
    boundaries: list[tuple[list[int], str]] = field(default_factory=list)
    calibrate_threads: list[int] = field(default_factory=list)
    """Thread counts to time the reference at after the window (``reference_speeds``)."""


def main(parent_pid: int) -> None:
    _die_with(parent_pid)
    job_path, result_path = sys.stdin.readline().strip(), sys.stdin.readline().strip()
    if not result_path:
        return  # an unused spare: its caller closed stdin
    job = ServingJob(**json.loads(Path(job_path).read_text()))
    host = hardware_identity()  # before ranks pin themselves, so "cores" is the host's
    lock = timing_lock()
    asked = time.time()
    _progress(job, 0, "waiting for the host timing lock (another trial is being timed)")
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
        mp.spawn(_rank_entry, args=(job, port, outdir, os.getpid()), nprocs=job.degree, join=True)
        return [json.loads((Path(outdir) / f"rank{r}.json").read_text()) for r in range(job.degree)]


def _rank_entry(rank: int, job: ServingJob, port: int, outdir: str, probe_pid: int) -> None:
    _die_with(probe_pid)
    (Path(outdir) / f"rank{rank}.json").write_text(json.dumps(_rank_main(rank, job, port)))
    _end_now()


def _rank_main(rank: int, job: ServingJob, port: int | None) -> dict[str, Any]:
    torch.set_num_threads(job.threads)
    cores = _pin_cores(rank, job.threads)
    if port is not None:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=job.degree)
    reference = reference_workload()  # before the baseline: its 0.4 MB of weights are not the model's
    baseline, baseline_file = current_rss_bytes(), file_rss_bytes()
    _progress(job, rank, "loading the model")
    model = load_rank_model(job, rank)
    batch = torch.load(job.batch_file, weights_only=True)  # the same request on every rank and in the check
    step = make_step(job, model, batch, rank)
    distributed = port is not None
    with torch.no_grad():
        _progress(job, rank, "serving the first request")
        first_call_s = _seconds(step)  # cold start: includes compiling a torch_compile program
        _progress(job, rank, f"warming up (first request took {first_call_s:.2f} s)", first_call_s)
        durations, peaks = _warm_up(step, job, distributed)
        settled = peaks[len(peaks) // 2:]  # after the allocator has grown to its serving size
        peak, file_growth = max(settled), file_rss_bytes() - baseline_file
        plan = _plan(durations, reference, job, distributed, rank)
        _progress(job, rank, f"timing ({plan.candidate_calls * BLOCKS_PER_ROUND} calls a round; first request took "
                             f"{first_call_s:.2f} s)", first_call_s)
        start_ns = time.time_ns()
        rounds = _timed_rounds(step, reference, job, cores, distributed, rank, plan)
        end_ns = time.time_ns()
        output = step()
        speeds = (reference_speeds(reference, job.calibrate_threads, plan.reference_calls)
                  if rank == 0 and job.calibrate_threads else None)
        checked = rank == 0 and (job.degree > 1 or runtime_for_artifact(job.artifact).compiles_when_served)
        error = _error_against_reference(job, batch, output) if checked else None
    if port is not None:
        dist.destroy_process_group()
    return {"rank": rank, "baseline_bytes": baseline, "peak_bytes": peak, "memory_spread_bytes": peak - min(settled),
            "file_growth_bytes": file_growth,
            "weight_bytes": local_weight_bytes(model) if job.strategy == "tensor_parallel" else None,
            "rounds": rounds, "settled": _settled(rounds, job, plan, rank), "reference_speeds": speeds,
            "window_ns": [start_ns, end_ns], "output_error": error, "first_call_s": first_call_s}


def _seconds(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _error_against_reference(job: ServingJob, batch: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
    """Largest difference from the single-process artifact (a torch_compile program: from the
    same program uncompiled), absolute and relative to its largest logit."""
    reference = load_artifact(job.artifact, job.threads, compiled=False)(batch).float()
    absolute = float((output.float() - reference).abs().max())
    return {"absolute": absolute, "relative": absolute / max(float(reference.abs().max()), 1e-12)}


def _warm_up(step: Callable[[], Any], job: ServingJob, distributed: bool) -> tuple[list[float], list[int]]:
    """Call the model alone for ``warmup_s`` (at least twice): each call's duration (ms) and
    peak RSS. This is the memory reading, taken before the reference workload first runs in
    the process: its few MB of activations would otherwise be counted in the peak, or would
    hide a small model's activations inside their freed pages. Ranks agree on when to stop,
    so every rank runs the same collective steps."""
    started, durations, peaks = time.perf_counter(), [], []
    while True:
        reset_peak_rss()
        durations.append(_seconds(step) * 1000)
        peaks.append(peak_rss_bytes())
        done = len(durations) >= 2 and time.perf_counter() - started >= job.warmup_s
        if _agree([int(done)], distributed)[0]:
            return durations, peaks


def _plan(durations: list[float], reference: Callable[[], Any], job: ServingJob, distributed: bool,
          rank: int) -> TimingPlan:
    """The timing plan from the warm-up's last calls; rank 0 decides and broadcasts."""
    agreed = [0, 0, 0, 0]
    if rank == 0:
        reference_ms = min(time_calls(reference, 3, 5))
        plan = TimingPlan.from_warmup(min(durations[-3:]), reference_ms, job.round_s, job.rounds, job.max_rounds,
                                      job.deadline - time.time())
        agreed = [plan.candidate_calls, plan.reference_calls, plan.rounds, plan.max_rounds]
    return TimingPlan(*_agree(agreed, distributed))


def _timed_rounds(step: Callable[[], Any], reference: Callable[[], Any], job: ServingJob, cores: list[int],
                  distributed: bool, rank: int, plan: TimingPlan) -> list[dict[str, Any]]:
    """Time rounds until ``plan.rounds`` undisturbed ones (or fewer that agree:
    ``paired_timing.rounds_agree``), ``plan.max_rounds`` in all, or the deadline.

    Rank 0 times the reference around every candidate block, decides whether another
    round is needed and, after a disturbed round, pauses (0.5 s, doubling, at most
    ``busy_wait_s`` in all) so a passing neighbour can finish before the next round.
    """
    rounds: list[dict[str, Any]] = []
    pause_s, paused_s = 0.5, 0.0
    while True:
        round_started = time.time()
        before = snapshot(cores)
        candidate, paired = [], []
        for _ in range(BLOCKS_PER_ROUND):
            if rank == 0:
                paired.append(time_calls(reference, REFERENCE_WARMUP_CALLS, plan.reference_calls))
            candidate.append(time_calls(step, 0, plan.candidate_calls))
        if rank == 0:
            paired.append(time_calls(reference, REFERENCE_WARMUP_CALLS, plan.reference_calls))
        load = _busiest(outside_load(before, snapshot(cores)), distributed)
        rounds.append({"candidate": candidate, "reference": paired, "outside_load": load})
        round_s = time.time() - round_started
        more = int(not _settled(rounds, job, plan, rank) and len(rounds) < plan.max_rounds
                   and time.time() + round_s < job.deadline)
        if not _agree([more], distributed)[0]:
            return rounds
        if rank == 0 and load > job.max_outside_load and paused_s < job.busy_wait_s:
            pause = min(pause_s, job.busy_wait_s - paused_s, max(0.0, job.deadline - time.time() - round_s))
            _progress(job, rank, f"pausing {pause:.1f} s: other work kept the cores {100 * load:.0f} % busy")
            time.sleep(pause)
            paused_s, pause_s = paused_s + pause, pause_s * 2


def _settled(rounds: list[dict[str, Any]], job: ServingJob, plan: TimingPlan, rank: int) -> bool:
    """Enough undisturbed rounds: ``plan.rounds`` of them, or fewer that agree (rank 0, which
    times the reference, decides; the others follow its broadcast)."""
    clean = [r for r in rounds if r["outside_load"] <= job.max_outside_load]
    return len(clean) >= plan.rounds or (rank == 0 and rounds_agree(clean))


def _busiest(load: float, distributed: bool) -> float:
    """The largest outside load any rank saw on its own cores this round: a neighbour on
    rank 1's core slows every collective step, though rank 0's cores stay quiet."""
    if not distributed:
        return load
    tensor = torch.tensor([load], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def _agree(values: list[int], distributed: bool) -> list[int]:
    """Rank 0's ``values`` on every rank (as they are, in a single process)."""
    if not distributed:
        return values
    tensor = torch.tensor(values)
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def _progress(job: ServingJob, rank: int, phase: str, first_call_s: float | None = None) -> None:
    """Where rank 0 is, for a timeout's message (the parent kills the probe without a word)."""
    if rank:
        return
    Path(job.progress_file).write_text(json.dumps({"phase": phase, "first_call_s": first_call_s}))


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


def _die_with(parent_pid: int) -> None:
    """Be killed when ``parent_pid`` dies (Linux ``PR_SET_PDEATHSIG``).

    The probe runs in its own session (so a timeout can kill it with its ranks) and holds
    the host timing lock: a ``slimsearch run`` killed with SIGKILL or by the OOM killer
    would otherwise leave it serving, holding the lock and the cores, until its own
    deadline -- and the restarted run would wait for it. It takes effect after the
    probe's imports (torch: about 1.5 s); a parent that died before is noticed then, by
    its pid. ``0`` (a probe started by hand) skips the check.
    """
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


def _end_now() -> None:
    """Exit at once, the result written: the interpreter's teardown with torch loaded
    (module finalisers, thread pools) took 0.3-0.5 s of every probe -- about a sixth of
    its wall time, which the trial waited for (idle EPYC family 26 model 2, 2026-12-01).
    A probe that failed raises before this and exits the usual way, with its traceback."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def job_dict(job: ServingJob) -> dict[str, Any]:
    return asdict(job)


if __name__ == "__main__":
    main(int(sys.argv[1]))
    _end_now()
