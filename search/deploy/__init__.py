"""Shipping a chosen trial: rebuild, re-measure in isolation, export, write deployment.yaml
(``deployment``) and register the served artifact in the MLflow Model Registry (``registry``).
"""
