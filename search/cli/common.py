"""What every command shares: the app, its consoles, the study arguments, finding the
study a read command names, and turning user-fixable errors and signals into exit codes."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import optuna
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from slimsearch.search.config import SlimsearchConfig, load_config
from slimsearch.search.store import records
from slimsearch.search.store.study import load_existing_study
from slimsearch.spaces import SlimsearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Overnight multi-objective model-compression search.")
# Logs of overnight runs are files, not terminals: give them room for the front table.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
F = TypeVar("F", bound=Callable[..., object])

StudyArg = typer.Argument(None, metavar="[CONFIG|STUDY]", show_default=False,
                          help="YAML config of the search (or a study name in the default output_dir)")
StudyOption = typer.Option(None, "--study", help="study name (default: the config's search.study_name)")
StorageOption = typer.Option(None, "--storage", help="Optuna storage URL (default: the config's)")
ConfigArg = typer.Argument(None, help="YAML config; omitted = the embedded digits default", show_default=False)


def read_study(target: str | None, study: str | None, storage: str | None
                ) -> tuple[optuna.Study, SlimsearchConfig, str]:
    """The study a read command shows -- named by a config file like ``run`` takes, or by a
    bare study name (the embedded default config's output_dir), with ``--study`` /
    ``--storage`` on top -- the config it last ran with (where its MLflow store and outputs
    are; the given one for a study that stored none this version reads) and its storage URL."""
    if target is not None and not Path(target).is_file() and not target.endswith((".yaml", ".yml")):
        given, study = SlimsearchConfig(), study or target
    else:
        given = load_config(Path(target) if target else None)
    storage_url = storage or given.storage_url
    found = load_existing_study(storage_url, study or given.search.study_name)
    try:
        ran_with = SlimsearchConfig.model_validate(found.user_attrs[records.STUDY_CONFIG])
    except (KeyError, ValidationError):
        ran_with = given
    return found, ran_with, storage_url


@contextlib.contextmanager
def graceful_stop(stop: threading.Event | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM stop the command, even where SIGINT was inherited as ignored
    (background jobs, nohup): an overnight run must stop cleanly when a scheduler ends it.

    With ``stop``, the first signal only sets it (the search finishes the running trial, so
    nothing is left half-written) and the second raises KeyboardInterrupt; without, the first raises.
    """

    def interrupt(signum: int, frame: object) -> None:
        if stop is None or stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        errors.print("[yellow]stopping:[/] a running trial finishes first, a teacher in training stops at its next "
                     "batch (Ctrl-C again to abort at once)", soft_wrap=True)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def clean_errors(command: F) -> F:
    """Turn the errors users can fix into one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with graceful_stop():
                return command(*args, **kwargs)
        except SlimsearchError as exc:
            errors.print(f"[{exc.colour}]{exc.label}:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            errors.print("[yellow]stopped:[/] interrupted before the first trial; run the same command again")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
