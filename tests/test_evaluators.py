"""Evaluators on tiny models, with the real isolated probe process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import torch
from torch import nn

from slimsearch.evaluators import (
    LatencyStats,
    MeasurementError,
    RankPlan,
    TimingProtocol,
    evaluate_accuracy,
    measure_serving,
    save_artifact,
    serving_runtime,
)
from slimsearch.evaluators.latency import time_calls
from slimsearch.evaluators.runtimes import load_artifact
from slimsearch.evaluators.isolation import timing_lock
from tests.helpers import probes_of, wait_until
from slimsearch.evaluators.probe_processes import ProbeProcesses
from slimsearch.evaluators.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss

SHAPE = (1, 8, 8)


def _tiny_artifact(path: Path, width: int = 8) -> Path:
    model = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10)).eval()
    return save_artifact("torch", model, torch.randn(4, *SHAPE), path)


def _measure(artifact: Path, round_s: float = 0.01, rounds: int = 1, strategy: str = "single", degree: int = 1,
             **overrides) -> object:
    settings = dict(batch_size=8, threads=1, timeout_s=120,
                    protocol=TimingProtocol(warmup_s=0.01, round_s=round_s, rounds=rounds, max_rounds=rounds + 2))
    settings.update(overrides)
    batch = torch.randn(settings.pop("batch_size"), *SHAPE)
    plan = RankPlan(strategy, degree, [str(artifact)] * degree, tolerance=1e-4, weight_bytes=[0] * degree)
    return measure_serving(artifact, plan, batch, **settings)


def test_latency_statistics_from_known_samples() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats.p50_ms == 3.0
    assert stats.p95_ms == pytest.approx(4.0 + 0.8 * 96.0)
    assert stats.p99_ms == pytest.approx(4.0 + 0.96 * 96.0)
    assert stats.mean_ms == pytest.approx(22.0)
    assert stats.cv > 1.0 and stats.repeats == 5
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0])


def test_time_calls_times_each_call_after_warmup() -> None:
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=3, repeats=7)
    assert len(calls) == 10 and len(samples) == 7 and all(s >= 0 for s in samples)


def test_peak_rss_can_be_reset_and_sees_tensor_memory() -> None:
    reset_peak_rss()
    before = peak_rss_bytes()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    assert peak_rss_bytes() - before >= 48 * 1024 * 1024
    del block
    reset_peak_rss()
    assert peak_rss_bytes() <= current_rss_bytes() + 8 * 1024 * 1024


def test_accuracy_is_nan_for_non_finite_outputs() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((len(x), 3), float("nan"))

    split = (torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    assert math.isnan(evaluate_accuracy(Broken(), split, lambda logits, labels: 1.0))


def test_single_process_serving_is_measured_in_a_probe(tmp_path: Path) -> None:
    result = _measure(_tiny_artifact(tmp_path / "m.pt"))
    assert result.latency.p50_ms > 0 and result.latency.repeats >= 6, "at least a call per block"
    assert result.memory_bytes > 0 and len(result.per_rank_peak_bytes) == 1
    assert result.baseline_bytes > 50 * 1024 * 1024, "baseline is a whole torch process"
    assert result.hardware["cpu"] and result.hardware["ranks"] == "1"


def test_data_parallel_really_runs_two_ranks_and_counts_their_memory(tmp_path: Path) -> None:
    artifact = _tiny_artifact(tmp_path / "m.pt")
    single = _measure(artifact)
    parallel = _measure(artifact, strategy="data_parallel", degree=2)
    assert len(parallel.per_rank_peak_bytes) == 2 and len(parallel.windows_ns) == 2
    assert parallel.hardware["ranks"] == "2"
    assert parallel.memory_bytes > single.memory_bytes + 50 * 1024 * 1024, "the second rank is a whole process"


def test_concurrent_measurements_never_overlap_their_timed_windows(tmp_path: Path) -> None:
    artifacts = [_tiny_artifact(tmp_path / f"m{i}.pt") for i in range(2)]
    results: list = [None, None]

    def worker(i: int) -> None:
        results[i] = _measure(artifacts[i], round_s=0.05)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a_start, a_end), (b_start, b_end) = results[0].windows_ns[0], results[1].windows_ns[0]
    assert a_end <= b_start or b_end <= a_start


def test_a_broken_artifact_is_a_measurement_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(MeasurementError, match="serving probe failed"):
        _measure(bad)


def test_a_probe_that_runs_too_long_is_killed_without_leftovers_and_says_why(tmp_path: Path) -> None:
    artifact = _tiny_artifact(tmp_path / "m.pt", width=64)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with timing_lock(), pytest.raises(MeasurementError, match="timed out .* while waiting for the host timing lock"):
        _measure(artifact, timeout_s=8)  # another trial is being timed all along
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not leftovers
    orphans = [p for p in psutil.process_iter(["cmdline"]) if str(artifact) in " ".join(p.info["cmdline"] or [])]
    assert not orphans


def test_a_killed_caller_takes_its_probe_down_instead_of_leaving_it_holding_the_host(tmp_path: Path) -> None:
    """A run killed with SIGKILL (kill -9, the OOM killer) cannot kill its probe, which lives
    in its own session: the probe must go by itself, or it keeps the timing lock and the
    cores until its deadline and the restarted run waits behind it."""
    artifact = _tiny_artifact(tmp_path / "m.pt")
    measure = "import sys; from pathlib import Path; from tests.test_evaluators import _measure; " \
              "_measure(Path(sys.argv[1]), timeout_s=600)"
    with timing_lock():  # the probe waits for the lock, as behind another trial's window
        caller = subprocess.Popen([sys.executable, "-c", measure, str(artifact)], cwd=Path(__file__).parents[1])
        wait_until(lambda: bool(probes_of(caller.pid)), timeout_s=60, every_s=0.1)
        caller.kill()
        caller.wait()
        wait_until(lambda: not probes_of(caller.pid), timeout_s=15, every_s=0.2)


def test_a_probe_started_ahead_serves_the_next_job_unless_the_environment_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The next probe is started (and imports torch) before its job exists; a runtime
    plug-in named by an environment variable is imported in the probe, so a spare started
    in another environment must not serve."""
    probes = ProbeProcesses({})
    try:
        known = {p.pid for p in probes_of(os.getpid())}
        probes.start_spare()
        [waiting] = [p for p in probes_of(os.getpid()) if p.pid not in known]
        taken = probes.take()
        assert taken.pid == waiting.pid
        taken.communicate("")  # no job: it ends quietly
        assert taken.returncode == 0

        probes.start_spare()
        [waiting] = [p for p in probes_of(os.getpid()) if p.pid not in known]
        monkeypatch.setenv("SLIMSEARCH_PROBE_TEST", "1")
        fresh = probes.take()
        assert fresh.pid != waiting.pid and not waiting.is_running()
        assert psutil.Process(fresh.pid).environ()["SLIMSEARCH_PROBE_TEST"] == "1"
        fresh.communicate("")

        spare_from_a_thread = threading.Thread(target=probes.start_spare)
        spare_from_a_thread.start()
        spare_from_a_thread.join()
        assert {p.pid for p in probes_of(os.getpid())} == known  # it would die with that thread
    finally:
        probes.close()


def test_memory_excludes_library_pages_faulted_in_while_serving(tmp_path: Path) -> None:
    """A bigger model must read as more memory, by about its weight bytes (the anonymous part)."""
    small = _measure(_tiny_artifact(tmp_path / "small.pt", width=8))
    big = _measure(_tiny_artifact(tmp_path / "big.pt", width=512))  # Linear(512*64 -> 10): ~1.3 MB of weights
    assert big.memory_bytes - small.memory_bytes > 1.0 * 1024 * 1024


def test_the_reference_workload_s_activations_are_not_counted_as_the_model_s_memory(tmp_path: Path) -> None:
    """The paired reference (a batch-64 CNN forward, about 10 MB of activations) runs in the
    probe beside the model; memory is read before it first runs, so a model of a few kB
    does not read as the reference's footprint."""
    result = _measure(_tiny_artifact(tmp_path / "m.pt"), round_s=0.05)
    assert result.memory_bytes < 5 * 1024 * 1024, f"{result.memory_bytes / 2**20:.1f} MB for a 21 kB model"


def test_rounds_disturbed_by_a_neighbour_on_our_core_are_detected_and_flagged(tmp_path: Path) -> None:
    artifact = _tiny_artifact(tmp_path / "m.pt", width=64)  # ~0.5 ms a call: rounds span ~20 clock ticks
    core = sorted(os.sched_getaffinity(0))[0]  # rank 0 with one thread is pinned to the first core
    neighbour = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, [{core}])\nwhile True: pass"])
    try:
        spinning = psutil.Process(neighbour.pid)
        wait_until(lambda: spinning.cpu_times().user > 0.2, timeout_s=30)  # it runs, not just started
        result = _measure(artifact, batch_size=64, round_s=0.2, rounds=2)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result.rounds_total == 4, "disturbed rounds are redone up to max_rounds"
    assert result.rounds_clean < 2 and result.noisy
    assert result.outside_load_max > 0.3


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two ranks need two cores")
def test_a_neighbour_on_another_rank_s_core_disturbs_a_multi_rank_reading(tmp_path: Path) -> None:
    artifact = _tiny_artifact(tmp_path / "m.pt", width=64)
    core = sorted(os.sched_getaffinity(0))[1]  # rank 1 with one thread is pinned to the second core
    neighbour = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, [{core}])\nwhile True: pass"])
    try:
        spinning = psutil.Process(neighbour.pid)
        wait_until(lambda: spinning.cpu_times().user > 0.2, timeout_s=30)
        result = _measure(artifact, batch_size=64, round_s=0.2, rounds=2, strategy="data_parallel", degree=2)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result.noisy and result.outside_load_max > 0.3, "rank 0's cores were quiet; rank 1's were not"


def test_an_onnxruntime_artifact_is_served_and_measured_on_onnxruntime(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
    onnxruntime = serving_runtime("onnxruntime")
    served = onnxruntime.from_buffers(onnxruntime.convert(model, 32, torch.randn(16, *SHAPE)))
    path_tag = onnxruntime.quant_path(model, 32)
    artifact = save_artifact("onnxruntime", served, torch.randn(4, *SHAPE), tmp_path / "m")
    assert artifact.suffix == ".onnx" and path_tag == "ort-fp32"
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(load_artifact(artifact)(x), model(x), atol=1e-5)
    result = _measure(artifact)
    assert result.latency.p50_ms > 0 and result.memory_bytes > 0


def test_an_onnxruntime_session_s_threads_stop_spinning_when_a_run_ends() -> None:
    """Spinning on after a run, they took a core from the paired reference timed next
    (5.2 ms read 15-17 ms): here ~0.05 CPU-s in the half second after the last run."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
    onnxruntime = serving_runtime("onnxruntime")
    served = onnxruntime.from_buffers(onnxruntime.convert(model, 32, torch.randn(16, *SHAPE)))
    served.threads = 2
    for _ in range(50):
        served(torch.randn(16, *SHAPE))
    process = psutil.Process()
    before = sum(process.cpu_times()[:2])
    threading.Event().wait(0.5)
    assert sum(process.cpu_times()[:2]) - before < 0.02, "the session's workers kept spinning after the run"
    assert onnxruntime.session_settings(2)["config_entries"], "the deployment spec names the setting"


def test_a_torch_compile_artifact_is_an_exported_program_compiled_in_the_probe(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
    served = serving_runtime("torch_compile").wrap(model)
    artifact = save_artifact("torch_compile", served, torch.randn(4, *SHAPE), tmp_path / "m")
    assert artifact.suffix == ".pt2"
    x = torch.randn(3, *SHAPE)
    program = load_artifact(artifact, compiled=False)
    assert torch.allclose(program(x), model(x), atol=1e-6), "the program computes the model, any batch size"
    assert evaluate_accuracy(program, (x, model(x).argmax(1)), lambda logits, y: float((logits.argmax(1) == y).float().mean())) == 1.0
    result = _measure(artifact)
    assert result.latency.p50_ms > 0 and result.memory_bytes > 0
    assert result.output_error < 1e-4, "compiled outputs match the uncompiled program"
    assert result.first_call_s > 10 * result.latency.p50_ms / 1000, "the first call compiles"


def test_the_probe_calibrates_the_reference_at_each_thread_count_asked(tmp_path: Path) -> None:
    artifact = _tiny_artifact(tmp_path / "m.pt")
    protocol = TimingProtocol(warmup_s=0.01, round_s=0.01, rounds=1, max_rounds=1, calibrate_threads=(1, 2))
    measured = _measure(artifact, threads=2, protocol=protocol)
    assert set(measured.reference_by_threads) == {1, 2}
    assert measured.reference_by_threads[2] == pytest.approx(measured.window_reference_ms)
    assert _measure(artifact).reference_by_threads == {}, "only the baseline pays for calibration"
    with pytest.raises(ValueError, match="up to 1 threads"):
        _measure(artifact, threads=1, protocol=protocol)
