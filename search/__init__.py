"""The orchestration layer: runs the study and records, reviews and deploys what it found.

``config`` (the YAML file) and ``objectives`` (metrics, constraints) are read by every
sub-package; ``loop`` runs trials, ``store`` keeps the records, ``review`` reads them for
the morning, ``deploy`` ships a chosen trial; ``cli`` is the ``slimsearch`` command.
Dependencies point down that list (cli > deploy > loop > review > store > config), checked
by import-linter in ``make test``.
"""
