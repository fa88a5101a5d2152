"""``slimsearch`` command line: run, worker, status, front, report, select, ui, cache, validate, space.

One module per kind of command (``searching``, ``reading``, ``deploying``,
``housekeeping``; imported in the order ``--help`` lists them), all on the one ``app`` of
``common``. Known problems (bad config, task
that fails to import, study mismatch) print one line ``error: ...`` naming the problem and
the fix, and exit 2; Ctrl-C exits 130 after the front is written, with the command to
resume. The layers that import torch or MLflow are imported inside the commands that use
them, so ``--help``, ``status`` and ``front`` start in about a second and stay small.
"""

from slimsearch.search.cli import searching, reading, deploying, housekeeping  # noqa: F401, I001 - add the commands
from slimsearch.search.cli.common import app

__all__ = ["app"]
