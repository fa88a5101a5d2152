"""The deployment calibration: which models and deployments it times, when a run takes it,
and that a study keeps it (stored, logged, learned by the predictor, never taken twice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimsearch.search.config import CALIBRATE_FROM_TRIALS, SearchSettings
from slimsearch.search.loop import calibration
from slimsearch.search.loop.calibration import calibration_candidates
from slimsearch.search.loop.predictor import CostPredictor
from slimsearch.search.store import records
from slimsearch.spaces import Candidate, SpaceSpec
from tests.conftest import write_config
from tests.helpers import run_cli, stores


def test_the_teacher_and_the_smallest_model_are_timed_at_every_real_single_process_deployment() -> None:
    space = SpaceSpec.model_validate({
        "prune": {"low": 0.0, "high": 0.5, "step": 0.25},
        "quantize": {"bits": [32, 16, 8, 4], "float16_dtypes": ["bfloat16"]},
        "student": {"width": [0.5, 1.0], "depth": [2, 3]},
        "parallel": {"strategies": ["single", "data_parallel"], "threads": [1, 2], "runtimes": ["torch", "onnxruntime"]},
    })
    chosen = calibration_candidates(space, threads_default=2)
    teacher = [c for c in chosen if c.student is None]
    smallest = [c for c in chosen if c.student is not None]
    # fp32 on both runtimes, bf16 on torch, int8 on both: 5 precisions x runtimes, at 1 and 2 threads; int4 is fp32.
    deployments = {(c.runtime, c.bits, c.float_dtype, c.threads) for c in teacher}
    assert deployments == {(runtime, bits, dtype, threads) for threads in (1, 2) for runtime, bits, dtype in
                           (("torch", 32, None), ("onnxruntime", 32, None), ("torch", 16, "bfloat16"),
                            ("torch", 8, None), ("onnxruntime", 8, None))}
    assert {(c.runtime, c.bits, c.float_dtype, c.threads) for c in smallest} == deployments
    assert all(c.strategy == "single" and c.prune_ratio == 0 for c in teacher)
    assert {(c.student.width, c.student.depth, c.prune_ratio) for c in smallest} == {(0.5, 2, 0.5)}
    assert chosen[0].threads == 2, "the baseline's thread count first"
    assert calibration_candidates(space.model_copy(update={"parallel": space.parallel.model_copy(
        update={"strategies": ["data_parallel"]})}), 2) == [], "no single-process deployment, nothing to calibrate"


def test_auto_calibrates_only_runs_long_enough_for_the_predictor_to_pay_it_back() -> None:
    assert not SearchSettings().calibrates(24), "the 24-trial demo is not slowed"
    assert SearchSettings().calibrates(CALIBRATE_FROM_TRIALS)
    assert SearchSettings(calibrate_deployments=True).calibrates(1)
    assert not SearchSettings(calibrate_deployments=False).calibrates(10_000)


@pytest.mark.e2e
def test_a_calibrated_study_stores_logs_and_learns_its_readings_once(tmp_path: Path, fast_config: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fast_config["search"].update(n_trials=1, calibrate_deployments=True, study_name="calibrated")
    fast_config["space"]["parallel"]["strategies"] = ["single"]
    config = write_config(tmp_path / "search.yaml", **fast_config)
    out = Path(fast_config["output_dir"])
    learned: list[Candidate] = []
    learn = CostPredictor.learn

    def remember(self: CostPredictor, candidate: Candidate, *args: object, **kwargs: object) -> None:
        learned.append(candidate)
        learn(self, candidate, *args, **kwargs)

    monkeypatch.setattr(CostPredictor, "learn", remember)
    run_cli(config)
    study, client, _, parent = stores(out, "calibrated")
    readings = study.user_attrs[records.STUDY_CALIBRATION]
    # fp32 and int8 (int4 runs fp32 kernels), 1 thread, torch: the teacher's fp32 is the baseline.
    assert len(readings) == 3 and all(r["metrics"]["latency_p50_ms"] > 0 and r["metrics"]["macs"] > 0
                                      for r in readings), readings
    smallest = [r for r in readings if r["candidate"]["student"]]
    teacher_int8 = [r for r in readings if not r["candidate"]["student"]]
    assert len(smallest) == 2 and len(teacher_int8) == 1
    assert all(r["metrics"]["macs"] < study.user_attrs["baseline"]["metrics"]["macs"] for r in smallest)
    assert learned[:4] == [Candidate.from_dict(study.user_attrs["baseline"]["candidate"]),
                           *(Candidate.from_dict(r["candidate"]) for r in readings)], "learned before any trial"
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "calibration/deployments.json",
                                                       str(tmp_path))).read_text())
    assert len(logged["deployments"]) == 4

    measured: list[Candidate] = []
    monkeypatch.setattr(calibration, "_reading", lambda candidate, *_: measured.append(candidate))
    run_cli(config)
    assert measured == [], "a resumed study is not calibrated again"
    assert study.user_attrs[records.STUDY_CALIBRATION] == readings

    # Readings calibrated against another reference workload are on another scale: taken again.
    study.set_user_attr(records.STUDY_CALIBRATION, [{**r, "reference_workload": "cnn-earlier"} for r in readings])
    run_cli(config)
    assert sorted(c.fingerprint() for c in measured) == sorted(Candidate.from_dict(r["candidate"]).fingerprint()
                                                               for r in readings)
