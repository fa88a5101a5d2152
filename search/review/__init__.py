"""The morning review: what the study found, read from its records.

``study_review`` gathers the front, knee point, plots and report of a study;
``selection`` chooses a trial under deployment limits (``DeploymentError`` when none fits).
"""
