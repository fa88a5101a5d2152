"""The records of a search: the Optuna study (the truth) and the MLflow runs derived from it.

``storage`` opens SQLite / PostgreSQL / journal storages and keeps heartbeats,
``study`` opens and checks studies, ``records`` names what a trial stores and derives
its MLflow run, ``tracking`` writes MLflow, ``pareto`` reads the front and hypervolume.
"""
