"""One self-contained HTML page for a study: Pareto plots, a sortable front table, the knee.

Self-contained means plotly.js is embedded (no CDN): review machines are often offline,
and MLflow serves this file as the parent run's ``pareto/front.html`` artifact.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go

_SORT_SCRIPT = """
<script>
document.querySelectorAll('table.front th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].innerText; const n = parseFloat(t);
                     return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}));
</script>
"""
_STYLE = """
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table.front { border-collapse: collapse; margin-top: 12px; }
table.front th, table.front td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.front th { background: #f3f3f3; cursor: pointer; }
table.front td.cfg { text-align: left; }
tr.knee { background: #e8f6e8; font-weight: 600; }
.sim { color: #9467bd; font-style: italic; }
.facts { color: #555; }
</style>
"""


@dataclass(frozen=True)
class ReportRow:
    """One front member as shown in the table; ``cells`` keys are the column headers."""

    cells: dict[str, str | float]
    knee: bool
    simulated: bool


def report_html(
    title: str, facts: list[str], pareto: go.Figure | None, rows: list[ReportRow], more: list[go.Figure] | None = None
) -> str:
    """The whole page; ``facts`` are short lines (task, hardware, baseline, constraints); ``more``
    are further figures shown below the front table. plotly.js is embedded once."""
    if pareto is None:
        return _page(title, facts, "<p>No completed trials yet.</p>", rows, "")
    plot = pareto.to_html(include_plotlyjs=True, full_html=False, div_id="pareto-plot")
    extra = "".join(f.to_html(include_plotlyjs=False, full_html=False) for f in more or [])
    return _page(title, facts, plot, rows, extra)


def _page(title: str, facts: list[str], plot: str, rows: list[ReportRow], extra: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}</head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + "".join(f"<p class='facts'>{html.escape(line)}</p>" for line in facts)
        + plot
        + f"<h2>Pareto front ({len(rows)} trials)</h2>"
        + _table(rows)
        + "<p class='facts'>Click a column header to sort. The highlighted row is the knee point "
        "(closest to the ideal after scaling each objective to [0, 1]); <span class='sim'>simulated</span> rows "
        "are fake-quant bit widths whose size is computed and whose speed is not a real low-bit kernel.</p>"
        + extra
        + _SORT_SCRIPT
        + "</body></html>"
    )


def _format(value: str | float) -> str:
    if not isinstance(value, float):
        return html.escape(str(value))
    return f"{int(value):,}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"


def _table(rows: list[ReportRow]) -> str:
    if not rows:
        return "<table class='front' id='front-table'><tbody></tbody></table><p>No feasible trial yet.</p>"
    headers = list(rows[0].cells)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for header in headers:
            value = row.cells[header]
            shown = _format(value)
            css = " class='cfg'" if header == "configuration" else ""
            if header == "configuration" and row.simulated:
                shown += " <span class='sim'>(simulated)</span>"
            cells.append(f"<td{css} data-v='{html.escape(str(value))}'>{shown}</td>")
        body.append(f"<tr class='{'knee' if row.knee else ''}'>{''.join(cells)}</tr>")
    return f"<table class='front' id='front-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
