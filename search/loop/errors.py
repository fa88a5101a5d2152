"""Why a search stops: a problem the user fixes (``SearchError``), or the user's Ctrl-C."""

from __future__ import annotations

from slimsearch.spaces.errors import SlimsearchError


class SearchError(SlimsearchError, RuntimeError):
    """The search cannot go on; the message says why and what to change."""


class SearchInterrupted(SlimsearchError, RuntimeError):
    """Ctrl-C: the running trial was marked and the front written; re-run to resume."""

    exit_code = 130
    label = "stopped"
    colour = "yellow"
