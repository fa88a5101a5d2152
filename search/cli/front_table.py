"""The front as a terminal table: printed by ``front`` and at the end of ``run``."""

from __future__ import annotations

import optuna
from rich.table import Table

from slimsearch.search.cli.common import console
from slimsearch.search.objectives import LATENCY_P50_MS, MODEL_MB, QualityMetric
from slimsearch.search.store.confirmation import stored_confirmation, teacher_metrics
from slimsearch.search.store.pareto import FrontRow, front_rows


def print_front(study: optuna.Study, objectives: list[str]) -> None:
    """The front table, under a line saying whether (and when) its latencies were confirmed."""
    facts, confirmed = stored_confirmation(study)
    rows = front_rows(study, objectives)
    table = _front_table(rows, objectives, teacher_metrics(study), QualityMetric.of(study.user_attrs))
    unconfirmed = [str(row.number) for row in rows if row.confirmed != "yes"]
    if not confirmed:
        table.caption = "latencies as each trial measured them (the front is re-measured together when a run ends)"
    else:
        table.caption = (f"latencies re-measured together at {facts['at']} ({facts['passes']} interleaved passes)"
                         + (f"; not confirmed: trial {', '.join(unconfirmed)}" if unconfirmed else ""))
    console.print(table)


def _front_table(rows: list[FrontRow], objectives: list[str], teacher: dict[str, float],
                 quality: QualityMetric) -> Table:
    noisy = sum(row.within_noise_of is not None for row in rows)
    table = Table(title=f"Pareto front ({len(rows) - noisy} feasible non-dominated trials"
                        + (f"; {noisy} more win only within measurement noise" if noisy else "") + ")")
    for column in ("trial", "configuration", *objectives, quality.drop, quality.test, "model MB", "vs teacher"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for row in rows:
        table.add_row(
            str(row.number),
            row.summary + (" [magenta](simulated)[/]" if row.simulated else "")
            + (f" [dim](within noise of trial {row.within_noise_of})[/]" if row.within_noise_of is not None else ""),
            *(f"{row.values[o]:.4g}" for o in objectives),
            f"{row.quality_drop:+.4f}",
            f"{row.test_quality:.4f}",
            f"{row.model_mb:.3f}",
            versus_teacher(row, teacher),
        )
    return table


def versus_teacher(row: FrontRow, teacher: dict) -> str:
    """Measured ratios against the teacher (its latency as confirmed beside the front), e.g.
    ``3.6x smaller 5.1x faster``."""
    parts = []
    if teacher.get(MODEL_MB) and row.model_mb > 0:
        parts.append(ratio_words(teacher[MODEL_MB] / row.model_mb, "smaller", "larger"))
    latency = row.values.get(LATENCY_P50_MS)
    if teacher.get(LATENCY_P50_MS) and latency:
        parts.append(ratio_words(teacher[LATENCY_P50_MS] / latency, "faster", "slower"))
    return " ".join(parts)


def ratio_words(ratio: float, better: str, worse: str) -> str:
    """``2.5x smaller`` / ``7.0x slower``, never ``0.1x faster``."""
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"
