"""Opening the Optuna study: storage, sampler, and the facts fixed once per study.

A study remembers its objectives, its reference point and the teacher's measured
baseline (with the hardware it was measured on) in its user attributes, so a resumed
run keeps judging candidates against the same numbers and refuses to mix hardware.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.search.config import SlimsearchConfig, redact_url
from slimsearch.search.store.outages import Outages
from slimsearch.search.store.storage import open_storage
from slimsearch.search.store.ledger import StudyLedger
from slimsearch.search.store.windowed_sampler import WindowedTPESampler
from slimsearch.search.store import records

SAMPLERS = {
    # TPE over a bounded history (windowed_sampler): the same proposals up to 1,000 trials, flat cost beyond.
    "tpe": lambda seed: WindowedTPESampler(seed=seed),
    # Multivariate TPE models the parameters jointly; group=True splits the conditional space
    # into the subspaces that occur together (student.*, prune.*, ...), as Optuna advises.
    "tpe-mv": lambda seed: WindowedTPESampler(seed=seed, multivariate=True, group=True),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


class StudyMismatch(SlimsearchError, RuntimeError):
    """An existing study cannot be resumed with this config."""


@contextlib.contextmanager
def readable_storage(url: str) -> Iterator[None]:
    """A storage that cannot be read (a malformed or half-written SQLite file, a server that
    refuses) is one line naming it, not a database traceback."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0][:200]
        raise StudyMismatch(f"the Optuna storage {redact_url(url)} cannot be read ({type(exc).__name__}: {first}); "
                            "restore it from a backup or point search.storage elsewhere") from None


def open_study(config: SlimsearchConfig, worker: int = 0, outages: Outages | None = None) -> optuna.Study:
    """Create the study, or load it if it exists (resume); check objectives did not change.
    ``outages`` say how long and where a run waits out an unreachable storage."""
    with readable_storage(config.storage_url):
        return _open_study(config, worker, outages)


def _open_study(config: SlimsearchConfig, worker: int, outages: Outages | None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(config.storage_url, outages)
    name = config.search.study_name
    # A resumed study, and each worker, gets its own sampler seed, so none replays another's draws.
    # (Counted without copies: Optuna's study summaries deep-copy every trial of every study.)
    done = 0
    if name in optuna.study.get_all_study_names(storage):
        done = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    seed = config.search.seed + done + 7919 * worker
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=list(config.objectives.values()),
        sampler=SAMPLERS[config.search.sampler](seed),
        load_if_exists=True,
    )
    if records.STUDY_UID not in study.user_attrs:
        study.set_user_attr(records.STUDY_UID, uuid.uuid4().hex)  # ties the study to its MLflow parent run
    _check_or_store(study, records.STUDY_OBJECTIVES, config.objectives)
    snapshot = config.model_dump(mode="json")
    for section in MODEL_DEFINING_SECTIONS:
        _check_or_store(study, f"{records.STUDY_CONFIG}.{section}", snapshot[section])
    study.set_user_attr(records.STUDY_CONFIG, snapshot)  # the latest run's full config, for select/report
    return study


# What determines the models a trial builds and how they are measured: changing any of these
# mid-study would mix incomparable trials on one front.
MODEL_DEFINING_SECTIONS = ("task", "training", "evaluation")


def _check_or_store(study: optuna.Study, key: str, value: Any) -> None:
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, value)
    elif isinstance(stored, dict) and isinstance(value, dict) and (retired := sorted(set(stored) - set(value))):
        raise StudyMismatch(
            f"study '{study.study_name}' was made by an older slimsearch whose {key} had {', '.join(retired)} "
            "(no longer settings): its trials are not comparable with this version's; use a new search.study_name"
        )
    elif stored != value:
        raise StudyMismatch(
            f"study '{study.study_name}' was created with {key} = {stored}, the config now says {value}; "
            "use a new search.study_name (or restore the old setting)"
        )


def load_existing_study(storage_url: str, study_name: str) -> optuna.Study:
    """An existing study, read-only use: a storage file that does not exist is not created."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for scheme in ("sqlite:///", "journal:///"):
        if storage_url.startswith(scheme) and not Path(storage_url.removeprefix(scheme)).exists():
            raise StudyMismatch(f"no Optuna storage at {storage_url.removeprefix(scheme)} (study '{study_name}'); "
                                "check output_dir / search.storage in the config")
    try:
        with readable_storage(storage_url):
            storage = open_storage(storage_url)
            return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.study.get_all_study_names(storage)
        raise StudyMismatch(
            f"no study named '{study_name}' in {redact_url(storage_url)}; existing: {', '.join(names) or 'none'}"
        ) from None


def stored_baseline(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(records.STUDY_BASELINE)


def evaluated_count(study: optuna.Study) -> int:
    """Finished trials that used up budget (:func:`records.uses_budget`)."""
    return StudyLedger.for_reading(study).evaluated

