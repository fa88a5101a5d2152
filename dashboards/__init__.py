"""Views of a study for the morning review: interactive Pareto plots and an HTML report.

``pareto_plot`` draws every objective pair with the front, dominated and infeasible
trials, simulated points and constraint bounds told apart; ``report`` wraps it with a
sortable front table, the knee point, a 3-D objective scatter, parallel coordinates over
the searched parameters and parameter importance into one self-contained (offline) page.
``launch`` starts the MLflow UI (and optuna-dashboard) on loopback for review.
These modules take plain data; ``slimsearch.search`` decides what goes in.
"""

from slimsearch.dashboards.pareto_plot import PlotPoint, pareto_figure
from slimsearch.dashboards.report import ReportRow, report_html
from slimsearch.dashboards.study_plots import importance_figure, objectives_3d, parallel_coordinates

__all__ = ["PlotPoint", "ReportRow", "importance_figure", "objectives_3d", "parallel_coordinates", "pareto_figure",
           "report_html"]
