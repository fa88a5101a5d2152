"""Views of a study for the morning review: interactive Pareto plots (plotly).

``pareto_plot`` draws the front against dominated and infeasible trials, marking
simulated (fake-quant) points distinctly; the study driver logs it to the MLflow parent
run as ``pareto/front.html``.
"""

from slimsearch.dashboards.pareto_plot import PlotPoint, pareto_figure

__all__ = ["PlotPoint", "pareto_figure"]
