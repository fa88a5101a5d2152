"""Interactive Pareto plots: every objective pair, front vs dominated vs infeasible.

Simulated (sub-8-bit fake-quant) points use an open marker and say ``simulated`` in
their hover text, so a number that no real kernel produced is never mistaken for one.
Constraint bounds on objectives are drawn as dashed lines in every panel they cross.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
    knee: bool = False


def pareto_figure(
    points: list[PlotPoint], objectives: dict[str, str], title: str, bounds: dict[str, float] | None = None
) -> go.Figure:
    """One 2-D panel per objective pair, coloured by front status, constraint bounds dashed."""
    names = list(objectives)
    pairs = list(itertools.combinations(names, 2))
    figure = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)
    for col, (x_name, y_name) in enumerate(pairs, start=1):
        for status, style in STATUS_STYLE.items():
            for simulated in (False, True):
                subset = [p for p in points if p.status == status and p.simulated == simulated]
                if not subset:
                    continue
                figure.add_trace(
                    go.Scatter(
                        x=[p.values[x_name] for p in subset],
                        y=[p.values[y_name] for p in subset],
                        mode="markers",
                        name=f"{status}{' (simulated)' if simulated else ''}",
                        legendgroup=f"{status}{simulated}",
                        showlegend=col == 1,
                        text=[_hover(p) for p in subset],
                        hoverinfo="text",
                        marker={**style, "symbol": "diamond-open" if simulated else "circle", "line": {"width": 1}},
                    ),
                    row=1,
                    col=col,
                )
        for name, axis in ((x_name, "x"), (y_name, "y")):
            if bounds and name in bounds:
                line = {"line_dash": "dash", "line_color": "#1f77b4", "row": 1, "col": col}
                (figure.add_vline if axis == "x" else figure.add_hline)(bounds[name], **line)
        knees = [p for p in points if p.knee]
        if knees:
            figure.add_trace(
                go.Scatter(x=[knees[0].values[x_name]], y=[knees[0].values[y_name]], mode="markers", name="knee",
                           legendgroup="knee", showlegend=col == 1, hoverinfo="skip",
                           marker={"symbol": "star", "size": 16, "color": "#2ca02c"}),
                row=1, col=col,
            )
        figure.update_xaxes(title_text=_axis_title(x_name, objectives), row=1, col=col)
        figure.update_yaxes(title_text=_axis_title(y_name, objectives), row=1, col=col)
    figure.update_layout(title=title, height=460, width=max(520, 430 * len(pairs)), hovermode="closest")
    return figure


def _axis_title(name: str, objectives: dict[str, str]) -> str:
    return f"{name} ({'higher' if objectives[name] == 'maximize' else 'lower'} is better)"


def _hover(point: PlotPoint) -> str:
    values = "<br>".join(f"{k} = {v:.4g}" for k, v in point.values.items())
    return f"trial {point.number}: {point.label}{' [simulated]' if point.simulated else ''}<br>{values}"
