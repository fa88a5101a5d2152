"""Interactive Pareto plot of a study: every objective pair, front vs dominated vs infeasible.

Simulated (sub-8-bit fake-quant) points use a distinct marker and say ``simulated`` in
their hover text, so a number that no real kernel produced is never mistaken for one.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

STATUS_STYLE = {
    "front": {"color": "#d62728", "size": 11},
    "dominated": {"color": "#7f7f7f", "size": 7},
    "infeasible": {"color": "#bcbd22", "size": 7},
}


@dataclass(frozen=True)
class PlotPoint:
    number: int
    values: dict[str, float]
    status: str
    """``front``, ``dominated`` or ``infeasible``."""
    simulated: bool
    label: str


def pareto_figure(points: list[PlotPoint], objectives: dict[str, str], title: str) -> go.Figure:
    """Scatter-matrix of all objectives (one panel per pair), coloured by front status."""
    names = list(objectives)
    dimensions_for = lambda subset: [  # noqa: E731 - tiny local helper
        {"label": f"{n} ({'max' if objectives[n] == 'maximize' else 'min'})", "values": [p.values[n] for p in subset]}
        for n in names
    ]
    figure = go.Figure()
    for status, style in STATUS_STYLE.items():
        for simulated in (False, True):
            subset = [p for p in points if p.status == status and p.simulated == simulated]
            if not subset:
                continue
            figure.add_trace(
                go.Splom(
                    dimensions=dimensions_for(subset),
                    name=f"{status}{' (simulated)' if simulated else ''}",
                    text=[f"trial {p.number}: {p.label}{' [simulated]' if p.simulated else ''}" for p in subset],
                    marker={**style, "symbol": "diamond-open" if simulated else "circle", "line": {"width": 1}},
                    diagonal_visible=False,
                    showupperhalf=False,
                )
            )
    figure.update_layout(title=title, height=300 * len(names), width=300 * len(names) + 200, hovermode="closest")
    return figure
