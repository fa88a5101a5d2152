"""The pre-registered yardstick of search quality (benchmarks/yardstick.py): its metrics on
a hand-made table, its seed sets and checkpoints defined in one place, and the uniform
baseline's replay on the committed digits table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import search_quality  # noqa: E402 - the benchmark itself
import yardstick  # noqa: E402
from yardstick import Outcome, Yardstick, ratio_interval, seed_sets  # noqa: E402

OBJECTIVES = ["accuracy", "latency_p50_ms", "memory_mb"]
DIRECTIONS = ["maximize", "minimize", "minimize"]
# accuracy, latency, memory; the infeasible rows are the fastest and smallest: they must not count.
SIX_ROWS = [
    Outcome((0.99, 4.0, 10.0), True),
    Outcome((0.98, 2.0, 12.0), True),  # the best feasible latency
    Outcome((0.97, 3.0, 8.0), True),  # the best feasible memory
    Outcome((0.99, 8.0, 16.0), True),  # the worst feasible latency and memory
    Outcome((0.50, 1.0, 4.0), False),
    Outcome((0.60, 0.5, 2.0), False),
]


def six_row_yardstick() -> Yardstick:
    return Yardstick.of_table(SIX_ROWS, OBJECTIVES, DIRECTIONS, study_reference=[-0.0, 10.0, 20.0])


def test_regret_is_the_best_feasible_value_found_over_the_table_s_best() -> None:
    yard = six_row_yardstick()
    assert yard.best == {"latency_p50_ms": 2.0, "memory_mb": 8.0}
    assert yard.regret(SIX_ROWS, "latency_p50_ms") == 0.0  # found everything: no regret
    assert yard.regret([SIX_ROWS[0]], "latency_p50_ms") == pytest.approx(1.0)  # 4 ms where 2 ms exists
    assert yard.regret([SIX_ROWS[0], SIX_ROWS[2]], "latency_p50_ms") == pytest.approx(0.5)
    assert yard.regret([SIX_ROWS[0], SIX_ROWS[2]], "memory_mb") == 0.0
    # Only infeasible rows found: the replay stands at the table's worst feasible value.
    assert yard.regret(SIX_ROWS[4:], "latency_p50_ms") == pytest.approx(3.0)
    assert yard.regret([], "memory_mb") == pytest.approx(1.0)


def test_hypervolume_under_both_reference_points_counts_feasible_rows_only() -> None:
    yard = six_row_yardstick()
    # Study reference (minimisation space): -accuracy < 0, latency < 10, memory < 20.
    assert yard.hv_study([SIX_ROWS[0]]) == pytest.approx(0.99 * (10 - 4) * (20 - 10))
    assert yard.hv_study([SIX_ROWS[0], SIX_ROWS[4]]) == pytest.approx(yard.hv_study([SIX_ROWS[0]]))
    # Normalised: ideal (accuracy 0.99, 2 ms, 8 MB) -> 0, nadir (0.97, 8 ms, 16 MB) -> 1, reference 1.1.
    ideal = Outcome((0.99, 2.0, 8.0), True)
    assert yard.hv_normalised([ideal]) == pytest.approx(1.1 ** 3)
    assert yard.hv_normalised([SIX_ROWS[3]]) == pytest.approx(1.1 * 0.1 * 0.1)  # accuracy at the ideal, costs at nadir
    assert yard.hv_normalised(SIX_ROWS[4:]) == 0.0
    assert set(yard.scores(SIX_ROWS)) == set(yardstick.METRICS)


def test_a_table_without_a_feasible_row_is_refused() -> None:
    with pytest.raises(ValueError, match="no feasible row"):
        Yardstick.of_table(SIX_ROWS[4:], OBJECTIVES, DIRECTIONS, [-0.0, 10.0, 20.0])


def test_ratio_interval_brackets_the_ratio_and_survives_a_baseline_at_the_optimum() -> None:
    mine, theirs = [0.1, 0.2, 0.3, 0.2, 0.1], [0.4, 0.5, 0.6, 0.4, 0.5]
    interval = ratio_interval(mine, theirs)
    assert interval.value == pytest.approx(0.2 / 0.5)
    assert interval.low <= interval.value <= interval.high
    assert ratio_interval([0.0] * 5, [0.0] * 5).value == 1.0
    assert ratio_interval([0.1] * 5, [0.0] * 5).value == float("inf")


def test_three_seed_sets_the_fresh_one_drawn_once_and_recorded(tmp_path: Path) -> None:
    recorded = tmp_path / "seed_sets.json"
    first = seed_sets(recorded)
    assert recorded.exists()
    assert seed_sets(recorded) == first  # read back, not drawn again
    assert list(first) == ["A", "B", "C"]
    assert first["A"] == list(range(20)) and first["B"] == list(range(1000, 1020))
    assert len({seed for seeds in first.values() for seed in seeds}) == 60  # the sets do not overlap


def test_the_checkpoints_and_seed_sets_are_read_from_one_place() -> None:
    assert search_quality.CHECKPOINTS is yardstick.CHECKPOINTS
    assert search_quality.EQUAL_TIME_AT is yardstick.EQUAL_TIME_AT
    defined = re.compile(r"^(CHECKPOINTS|EQUAL_TIME_AT|SEED\w*|\w*_SEEDS?)\s*=", re.MULTILINE)
    elsewhere = [path.name for path in BENCHMARKS.glob("*.py")
                 if path.name != "yardstick.py" and defined.search(path.read_text())]
    assert not elsewhere, f"a checkpoint or seed set defined outside yardstick.py: {elsewhere}"


def test_the_uniform_baseline_starts_with_the_anchors_and_never_repeats() -> None:
    table = search_quality.Table.load(BENCHMARKS / "tables" / "digits.csv")
    trace = search_quality.replay(table, search_quality.BASELINE, seed=3, budget=40)
    assert len(trace.outcomes) == 40 and trace.clock == sorted(trace.clock)
    again = search_quality.replay(table, search_quality.BASELINE, seed=3, budget=40)
    assert again.outcomes == trace.outcomes  # seeded
    other = search_quality.replay(table, search_quality.BASELINE, seed=4, budget=40)
    anchors = len(search_quality.anchor_params(table.space))
    assert other.outcomes[:anchors] == trace.outcomes[:anchors] and other.outcomes != trace.outcomes
    # Equal-time checkpoints keep what was evaluated by then, nothing more.
    n = next(i for i in range(10, 40) if trace.clock[i - 1] < trace.clock[i])  # a candidate that cost time
    assert trace.by((trace.clock[n - 1] + trace.clock[n]) / 2 / 3600) == trace.first(n)
