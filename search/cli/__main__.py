"""``python -m slimsearch.search.cli``, the same as the ``slimsearch`` console script."""

from slimsearch.search.cli import app

app()
