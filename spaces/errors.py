"""The one base of every error a user can fix.

It lives in the bottom layer so that every layer's errors derive from it and the command
line catches one type: it prints the message as one line (the problem and the fix) and
exits with the error's ``exit_code``. A new user-facing error only has to derive from it.
"""

from __future__ import annotations


class SlimsearchError(Exception):
    """A problem the user can fix (bad config, unreachable store, no deployment under the
    limits); never a bug. The message names the problem and what to change."""

    exit_code = 2
    label = "error"
    colour = "red"


class InvalidCandidate(ValueError):
    """A candidate that cannot be built or served here; the message is the recorded reason."""
