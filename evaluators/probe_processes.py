"""Serving probe processes, each started before its job is known, so its start-up is hidden.

A probe is a fresh Python process (``serving_probe``) so its memory is measured against
a clean baseline and nothing of the search's own state shares its heap. Starting it --
the interpreter and ``import torch`` -- took 2.3 s of a ~4.3 s probe on the digits demo
(2026-11-30, AMD EPYC family 25 model 17, idle): half of every trial's measurement was
waiting for imports. So after a probe ends, the next one is started at once and waits,
imported and idle, for its job on stdin: its start-up overlaps the next trial's build
(training, pruning, export) instead of following it. Each process still serves exactly
one job, so isolation and memory baselines are as before, and the spare starts only
after the previous probe's timed window, never during one.

A spare is used only if it was started in the caller's environment and working directory
(a runtime plug-in named by an environment variable is imported in the probe), and only
a process's main thread keeps one: the probe is killed when the *thread* that started it
ends (``PR_SET_PDEATHSIG``), and a spare killed between two trials would fail the second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass

PROBE_MODULE = "slimsearch.evaluators.serving_probe"
Context = tuple[str, tuple[tuple[str, str], ...]]
"""A working directory and an environment, what a probe process is started in."""


@dataclass(frozen=True)
class _Spare:
    process: subprocess.Popen
    context: Context
    owner: int
    """The process that started it: a forked child inherits the reference, not the spare."""


class ProbeProcesses:
    """Hands out probe processes; keeps one started ahead for the next job."""

    def __init__(self, extra_environment: dict[str, str]) -> None:
        self.extra_environment = extra_environment
        self._lock = threading.Lock()
        self._spare: _Spare | None = None

    def take(self) -> subprocess.Popen:
        """A probe process waiting for its job: the spare if it still fits, else a new one.
        The caller writes the job's two paths to its stdin (``communicate(input=...)``)."""
        context = self._context()
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.owner != os.getpid():
            spare = None  # a forked child's copy of its parent's spare: the parent's to use
        if spare is not None and spare.context == context and spare.process.poll() is None:
            return spare.process
        if spare is not None:
            _stop(spare.process)
        return self._start(context)

    def start_spare(self) -> None:
        """Start the next job's probe now (after a timed window, before the next build)."""
        if threading.current_thread() is not threading.main_thread():
            return
        context = self._context()
        with self._lock:
            if self._spare is None:
                self._spare = _Spare(self._start(context), context, os.getpid())

    def close(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.owner == os.getpid():
            _stop(spare.process)

    def _context(self) -> Context:
        return os.getcwd(), tuple(sorted({**os.environ, **self.extra_environment}.items()))

    @staticmethod
    def _start(context: Context) -> subprocess.Popen:
        # A new session makes the probe and its rank processes one group we can kill together.
        return subprocess.Popen([sys.executable, "-m", PROBE_MODULE, str(os.getpid())], cwd=context[0],
                                env=dict(context[1]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """End an unused spare: it holds nothing but its imports (a job is never half-given)."""
    process.kill()
    process.communicate()
