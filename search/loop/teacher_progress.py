"""What the user sees while the teacher trains: one line per epoch, and a stop that works.

Training a teacher can take an hour (a fine-tuned transformer on a large split); without
a line per epoch a run looks hung, and a first Ctrl-C that only asks to "stop after the
running trial" would wait for the whole training. :class:`TeacherProgress` prints each
epoch's mean training loss, validation metric, time per epoch and the time left, to the
console and the ``slimsearch`` log, and ends the training at the next batch once a stop
was requested (nothing is cached, so the next run trains the teacher again).
"""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console
from torch import nn

from slimsearch.evaluators import predict
from slimsearch.pipelines import Task

log = logging.getLogger("slimsearch")


class TeacherTrainingStopped(Exception):
    """A stop was requested while the teacher trained; raised from inside its training loop."""


class TeacherProgress:
    """Reports the teacher's training and stops it on request (``pipelines.training.TrainingProgress``)."""

    def __init__(self, task: Task, console: Console, stop: threading.Event):
        self.task, self.console, self.stop = task, console, stop
        self.losses: list[float] = []
        self.started = self.epoch_started = time.monotonic()
        self.batches = 0

    def on_batch(self, loss: float) -> None:
        self.losses.append(loss)
        self.batches += 1
        if self.stop.is_set():
            raise TeacherTrainingStopped(f"stopped the teacher's training after {self.batches} batches "
                                         "(nothing cached: the next run trains it again)")

    def on_epoch(self, epoch: int, epochs: int, model: nn.Module) -> None:
        now = time.monotonic()
        quality = self.task.metric(predict(model, self.task.val[0]), self.task.val[1])
        per_epoch = (now - self.started) / epoch
        loss = sum(self.losses) / max(1, len(self.losses))
        line = (f"teacher epoch {epoch}/{epochs}: loss {loss:.4f}, validation {self.task.metric_name} {quality:.4f}, "
                f"{now - self.epoch_started:.1f} s, about {per_epoch * (epochs - epoch) / 60:.1f} min left")
        self.console.print(line)
        log.info(line)
        self.losses.clear()
        self.epoch_started = now
