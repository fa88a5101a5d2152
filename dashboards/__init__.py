"""Views of a study for the morning review: interactive Pareto plots and an HTML report.

``pareto_plot`` draws every objective pair with the front, dominated and infeasible
trials, simulated points and constraint bounds told apart; ``report`` wraps it with a
sortable front table and the knee point into one self-contained (offline) HTML page.
These modules take plain data; ``slimsearch.search`` decides what goes in.
"""

from slimsearch.dashboards.pareto_plot import PlotPoint, pareto_figure
from slimsearch.dashboards.report import ReportRow, report_html

__all__ = ["PlotPoint", "ReportRow", "pareto_figure", "report_html"]
