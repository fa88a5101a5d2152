"""The search loop: ask the sampler, build and measure the candidate, record the outcome.

``driver`` owns a run (study, baseline, MLflow parent, the ask loop), ``recording``
records how each trial ended in Optuna and then MLflow, ``publishing`` keeps the front's
tags and artifacts, ``trial`` builds and measures one candidate with no storage side effects,
``early_stopping`` stops hopeless trials, ``workers`` and ``ray_backend`` run trials in
more processes or on a Ray cluster through the same driver.
"""
