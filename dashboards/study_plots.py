"""The other views of a study: 3-D objective scatter, parallel coordinates, parameter importance.

Like ``pareto_plot`` these take plain data. Parallel coordinates put every searched
parameter and every objective on one axis each; text columns become categorical axes.
"""

from __future__ import annotations

import plotly.graph_objects as go

from slimsearch.dashboards.pareto_plot import STATUS_STYLE, PlotPoint


def objectives_3d(points: list[PlotPoint], objectives: dict[str, str]) -> go.Figure:
    """All trials in the space of three objectives, coloured by front status."""
    x, y, z = list(objectives)[:3]
    figure = go.Figure()
    for status, style in STATUS_STYLE.items():
        subset = [p for p in points if p.status == status]
        if subset:
            figure.add_trace(go.Scatter3d(
                x=[p.values[x] for p in subset], y=[p.values[y] for p in subset], z=[p.values[z] for p in subset],
                mode="markers", name=status,
                text=[f"trial {p.number}: {p.label}{' [simulated]' if p.simulated else ''}" for p in subset],
                hoverinfo="text", marker={"color": style["color"], "size": style["size"] / 2,
                                          "symbol": ["diamond-open" if p.simulated else "circle" for p in subset]},
            ))
    figure.update_layout(title="All trials in objective space (3-D)", height=560, width=760,
                         scene={"xaxis_title": x, "yaxis_title": y, "zaxis_title": z})
    return figure


def parallel_coordinates(rows: list[dict[str, float | str]], color_by: str) -> go.Figure:
    """One axis per column of ``rows`` (searched parameters, then objectives), coloured by ``color_by``."""
    dimensions = []
    for column in rows[0]:
        values = [row[column] for row in rows]
        if all(isinstance(v, (int, float)) for v in values):
            dimensions.append({"label": column, "values": values})
        else:
            categories = sorted({str(v) for v in values})
            dimensions.append({"label": column, "values": [categories.index(str(v)) for v in values],
                               "tickvals": list(range(len(categories))), "ticktext": categories})
    colors = [row[color_by] for row in rows]
    figure = go.Figure(go.Parcoords(dimensions=dimensions, line={"color": colors, "colorscale": "Viridis",
                                                                  "showscale": True, "colorbar": {"title": color_by}}))
    figure.update_layout(title="Searched parameters and objectives (parallel coordinates)", height=480,
                         width=max(900, 120 * len(dimensions)))
    return figure


def importance_figure(importances: dict[str, dict[str, float]], trials: int, of: int) -> go.Figure:
    """Grouped bars: for each objective, Optuna's fANOVA importance of each parameter,
    computed over ``trials`` of the study's ``of`` complete trials."""
    parameters = sorted({p for per_objective in importances.values() for p in per_objective})
    figure = go.Figure([
        go.Bar(name=objective, y=parameters, x=[values.get(p, 0.0) for p in parameters], orientation="h")
        for objective, values in importances.items()
    ])
    figure.update_layout(barmode="group", height=120 + 28 * len(parameters) * max(1, len(importances)) // 2,
                         width=900, title=f"Parameter importance per objective (Optuna fANOVA, {trials}"
                         + (f" sampled of {of}" if of > trials else "") + " complete trials)",
                         xaxis_title="importance (share of explained variance)")
    return figure
