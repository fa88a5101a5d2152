"""Third-party chatter goes to the run's log file, not the user's terminal.

MLflow logs INFO lines (database migrations, "registered model ...") through its own
stderr handler, libraries raise UserWarnings (MLflow's carry raw ANSI escape codes),
and artifact downloads draw progress bars. An overnight run's terminal should show the
search; all of that is kept, with timestamps, in ``<output_dir>/logs/<study>.log``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_CHATTY = ("mlflow", "alembic", "urllib3", "onnxruntime", "torch", "transformers")


def route_library_logs(path: Path) -> Path:
    """Send warnings and library loggers to ``path`` (appended); returns it. Idempotent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # transformers adds its own stderr handler when it first logs (after this runs); its level is read here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in _CHATTY), logging.getLogger("py.warnings")):
        # Plain stream handlers print to the terminal; test or tool handlers (subclasses) stay.
        logger.handlers = [h for h in logger.handlers if type(h) not in (logging.StreamHandler, logging.FileHandler)]
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    return path
