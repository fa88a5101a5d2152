"""The one YAML config file, validated by pydantic.

Every field has a default that runs the built-in digits demo, so ``SlimsearchConfig()``
is the embedded default and ``configs/digits.yaml`` spells the same values out. Unknown
keys are errors, and :func:`load_config` turns any problem into one line that names the
file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator, ValidationInfo

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.search.objectives import (
    ACCURACY,
    ACCURACY_METRIC,
    LATENCY_P50_MS,
    MEMORY_MB,
    SERVING_METRICS,
    Constraint,
    Direction,
    QualityMetric,
    quality_name,
)
from slimsearch.spaces import SpaceSpec

if TYPE_CHECKING:  # torch-importing layers, loaded only when a config is put to work: read commands stay light
    from slimsearch.evaluators import TimingProtocol
    from slimsearch.pipelines import Task, TrainingRecipe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EarlyStoppingSettings(_Strict):
    enabled: bool = Field(True, description="stop trials that cannot meet the accuracy constraint or reach the front")
    min_history: int = Field(5, ge=1, description="completed trials past the same epoch before any trial is stopped there")
    slack: float = Field(0.005, ge=0, description="added to the largest accuracy gain seen after the same epoch")


STORAGE_SCHEMES = ("sqlite:///", "postgresql", "mysql", "journal:///")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: what is printed, logged or tagged.
    (Better still, keep the password out of the config: libpq reads ``PGPASSWORD``.)"""
    return _PASSWORD.sub(r"\1:***@", url)


class RaySettings(_Strict):
    address: str | None = Field(None, description="Ray cluster to join, e.g. ray://head:10001 (None = start Ray here)")
    cpus_per_trial: int = Field(1, ge=1, description="CPUs each Tune trial reserves (and the torch threads it uses)")


CALIBRATE_FROM_TRIALS = 100
"""Trials a run must ask for before ``calibrate_deployments: auto`` calibrates. Its two
probes per deployment cost what 15 trials' measurements do on the digits tables (8
deployments): a third of a 24-trial demo. Replayed on the digits-transformer table with
the calibration charged to a 40-trial search, tpe's hypervolume at uniform random's time
for 40 trials fell below uniform's (95 % CI lows 0.97-1.04 study / 0.91-0.95 normalised,
against 1.05-1.14 / 1.08-1.10 uncalibrated; benchmarks/results/search_quality.md), while
over an overnight run's hundreds of trials the probes are a minute and the predictor
they inform orders every deployment variant."""


class SearchSettings(_Strict):
    backend: Literal["optuna", "ray"] = Field("optuna", description="optuna: local worker processes; ray: Ray Tune")
    sampler: Literal["tpe", "tpe-mv", "nsga2", "gp", "random"] = Field(
        "tpe", description="tpe | tpe-mv (multivariate, grouped) | nsga2 | gp (Gaussian process) | random")
    n_trials: int = Field(24, ge=1, description="trials to run in this invocation (a re-run adds more)")
    timeout_s: float | None = Field(None, gt=0, description="stop asking for new trials after this many seconds")
    seed: int = 0
    study_name: str = Field("digits-demo", description="letters, digits, '.', '_', '-' (it names files in output_dir)")
    storage: str | None = Field(
        None, description="Optuna storage URL: sqlite:///FILE, postgresql://USER@HOST/DB (many hosts) or "
        "journal:///FILE; default: SQLite file in output_dir")
    front_every: int = Field(5, ge=1, description="check every N trials whether the front changed and log its table "
                             "if so (the HTML report: every 10 minutes and at the end)")
    workers: int = Field(1, ge=1, description="processes on this host sharing the study (ray: concurrent Tune trials)")
    heartbeat_s: int = Field(10, ge=1, description="a trial silent for 3 heartbeats is failed and retried once")
    storage_patience_s: float = Field(
        600, ge=0, description="how long to wait out an unreachable storage or tracking server (a PostgreSQL "
        "restart) before stopping with one line")
    remeasure: bool = Field(False, description="measure a repeated proposal again (else it is answered from the "
                            "study: not re-run, not counted)")
    deployment_variants: int = Field(
        1, ge=0, description="after a new model is measured, measure this many other deployments of it next (post-"
        "training bit width, runtime, threads, strategy; the fastest the cost predictor expects first, only more "
        "precise ones if it missed the accuracy constraints), and first, for a pruned student that met them, the same "
        "student unpruned: they re-use its trained stages, so cost a conversion and a probe, not a training run; 0 "
        "turns them off")
    calibrate_deployments: Literal["auto"] | bool = Field(
        "auto", description="before a study's first trial, time the teacher and the space's smallest model (untrained: "
        "speed does not depend on the weights) at every single-process deployment, once per study, so the cost "
        "predictor knows each deployment from the start (true / false); auto: when a run asks for at least "
        f"{CALIBRATE_FROM_TRIALS} trials")
    early_stopping: EarlyStoppingSettings = Field(default_factory=EarlyStoppingSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    def calibrates(self, n_trials: int) -> bool:
        """Whether a run asking for ``n_trials`` calibrates the deployments (if not done yet)."""
        if self.calibrate_deployments == "auto":
            return n_trials >= CALIBRATE_FROM_TRIALS
        return bool(self.calibrate_deployments)

    @field_validator("study_name")
    @classmethod
    def _safe_study_name(cls, name: str) -> str:
        if not STUDY_NAME.fullmatch(name):
            raise ValueError(f"'{name}' is not a safe study name (it names files and folders in output_dir); "
                             "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return name

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(STORAGE_SCHEMES):
            raise ValueError(f"unsupported storage URL '{url}'; use one of {', '.join(STORAGE_SCHEMES)}...")
        return url


class TrackingSettings(_Strict):
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite file in output_dir")
    experiment: str = "slimsearch"


class TrainingSettings(_Strict):
    teacher_epochs: int = Field(15, ge=0)
    distill_epochs: int = Field(10, ge=0)
    finetune_epochs: int = Field(3, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)

    def recipe(self) -> TrainingRecipe:
        from slimsearch.pipelines import TrainingRecipe

        return TrainingRecipe(**self.model_dump())


class EvaluationSettings(_Strict):
    batch_size: int = Field(64, ge=1, description="serving batch size for latency and memory")
    warmup_s: float = Field(0.3, ge=0, description="seconds of untimed calls before timing (at least two calls)")
    round_s: float = Field(0.3, gt=0, description="seconds of timed calls per round (6 to 600 calls)")
    rounds: int = Field(3, ge=1, description="undisturbed timing rounds wanted (two that agree within 2 % "
                        "settle it sooner)")
    max_rounds: int = Field(6, ge=1, description="give up (and flag the measurement noisy) after this many rounds")
    max_outside_load: float = Field(0.2, ge=0, le=1, description="a round whose cores were busier with other work is redone")
    busy_wait_s: float = Field(20, ge=0, description="longest total pause between disturbed rounds, waiting for quiet")
    timeout_s: float = Field(300, gt=0, description="kill a serving measurement after this long")
    confirm_passes: int = Field(2, ge=0, description="interleaved passes re-measuring the front together when a run "
                                "ends (0: keep each trial's own reading)")
    calibration_size: int = Field(256, ge=1, description="training rows used to calibrate int8")
    placement: Literal["local", "ray"] = Field("local", description="where evaluators run")
    ray_address: str | None = Field(None, description="Ray cluster to join for placement: ray (None = local Ray)")
    bench_resource: str = Field("latency_bench", description="Ray resource of the nodes that time models")

    @model_validator(mode="after")
    def _rounds_fit(self) -> EvaluationSettings:
        if self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be >= rounds ({self.rounds})")
        return self

    def protocol(self, reference_ms: float | None = None, calibrate_threads: tuple[int, ...] = ()) -> TimingProtocol:
        """The timing protocol, calibrated to the study's reference latency when given
        (and calibrating the reference at ``calibrate_threads``: the baseline's)."""
        from slimsearch.evaluators import TimingProtocol

        return TimingProtocol(self.warmup_s, self.round_s, self.rounds, self.max_rounds, self.max_outside_load,
                              self.busy_wait_s, reference_ms, calibrate_threads)


class SlimsearchConfig(_Strict):
    task: str = Field("digits", description="built-in task name or 'module:callable' returning a Task")
    output_dir: str = "slimsearch-out"
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    objectives: dict[str, Direction] = Field(
        default_factory=lambda: {ACCURACY: "maximize", LATENCY_P50_MS: "minimize", MEMORY_MB: "minimize"}
    )
    constraints: list[str] = Field(default_factory=lambda: [f"{ACCURACY_METRIC.drop} <= 0.01"])
    search: SearchSettings = Field(default_factory=SearchSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, objectives: dict[str, Direction]) -> dict[str, Direction]:
        derived = sorted(name for name in objectives if name.endswith("_drop") or name.startswith("test_"))
        if derived:
            raise ValueError(f"objective(s) {derived} are derived columns; optimise the task's metric itself "
                             f"(e.g. accuracy) or one of {sorted(SERVING_METRICS)}")
        if len(objectives) < 2:
            raise ValueError("a multi-objective search needs at least two objectives")
        tasks = sorted({name for name in objectives if name not in SERVING_METRICS})
        if len(tasks) > 1:
            raise ValueError(f"{tasks} would be {len(tasks)} task metrics; a task has one quality metric (e.g. "
                             f"accuracy), the others must be serving metrics {sorted(SERVING_METRICS)}")
        return objectives

    @property
    def quality_names(self) -> list[str]:
        """The task metrics the objectives and constraints name, sorted: one at most in a
        config that fits its task (a set would pick an arbitrary one under hash seeding)."""
        return sorted({quality_name(m) for m in [*self.objectives, *(c.metric for c in self.parsed_constraints)]} - {None})

    def with_task_metric(self, quality: QualityMetric, task: str) -> SlimsearchConfig:
        """This config speaking the task's metric: the defaults (``accuracy``) renamed where
        the config leaves objectives and constraints unset, else checked against it."""
        unset = {"objectives", "constraints"} - self.model_fields_set
        changes: dict[str, object] = {}
        if "objectives" in unset:
            changes["objectives"] = {quality.name: quality.direction,
                                     **{k: v for k, v in self.objectives.items() if k != ACCURACY}}
        if "constraints" in unset:
            changes["constraints"] = [text.replace(ACCURACY_METRIC.drop, quality.drop) for text in self.constraints]
        config = self.model_copy(update=changes) if quality.name != ACCURACY and changes else self
        fix = (f"write '{quality.name}: {quality.direction}' in objectives and '{quality.drop} <= ...' in constraints "
               f"(a drop is how much worse than the teacher, in {quality.name}'s units)")
        if other := [name for name in config.quality_names if name != quality.name]:
            raise ConfigError(f"the config measures '{other[0]}' but task '{task}' scores "
                              f"'{quality.name}' ({quality.direction}); {fix}")
        if config.objectives.get(quality.name, quality.direction) != quality.direction:
            raise ConfigError(f"objectives say '{quality.name}: {config.objectives[quality.name]}' but task '{task}' "
                              f"says {quality.name} is to {quality.direction}; {fix}")
        return config

    @field_validator("constraints")
    @classmethod
    def _parseable_constraints(cls, constraints: list[str], info: ValidationInfo) -> list[str]:
        named = {quality_name(name) for name in info.data.get("objectives", {})} - {None}
        for text in constraints:
            metric = Constraint.parse(text).metric
            if (task := quality_name(metric)) is not None and named and task not in named:
                (quality,) = named
                raise ValueError(f"'{metric}' in '{text}' is neither a serving metric {sorted(SERVING_METRICS)} nor "
                                 f"the objectives' task metric ({quality}, {quality}_drop, test_{quality}); a task "
                                 f"scored by another metric names it in objectives too (e.g. {task}: maximize)")
            named |= {task} - {None}
        return constraints

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.constraints]

    def for_task(self, task: Task) -> SlimsearchConfig:
        """This config resolved for ``task``: its training defaults and its metric."""
        quality = QualityMetric(task.metric_name, task.metric_direction)
        return self.with_task_defaults(task.training_defaults).with_task_metric(quality, self.task)

    def with_task_defaults(self, defaults: dict[str, float]) -> SlimsearchConfig:
        """This config with the task's training defaults (a pretrained transformer fine-tunes
        at 5e-5, not the digits nets' 3e-3) where the config's ``training`` section does not
        set the value itself. Resolved once per run, so workers, Ray actors, the stored
        snapshot and ``select`` all rebuild with the same recipe."""
        chosen = {k: v for k, v in defaults.items() if k not in self.training.model_fields_set}
        if not chosen:
            return self
        try:
            training = TrainingSettings.model_validate({**self.training.model_dump(), **chosen})
        except ValidationError as exc:
            raise ConfigError(f"the task's training_defaults: {format_validation_error(exc)}") from None
        return self.model_copy(update={"training": training})

    @property
    def storage_url(self) -> str:
        return self.search.storage or f"sqlite:///{Path(self.output_dir) / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.tracking_uri or f"sqlite:///{Path(self.output_dir) / 'mlflow.db'}"

    @property
    def cache_dir(self) -> Path:
        return Path(self.output_dir) / "cache"

    @property
    def artifact_root(self) -> Path:
        return Path(self.output_dir) / "mlartifacts"


class ConfigError(SlimsearchError, ValueError):
    """A config problem, phrased as one line naming the file and the field."""


def load_config(path: str | Path | None) -> SlimsearchConfig:
    """Load and validate ``path``; ``None`` gives the embedded digits default."""
    if path is None:
        return SlimsearchConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is UTF-8 text)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (task:, space:, search:, ...)")
    try:
        return SlimsearchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """First error as ``field.path: message`` (+ how many more), on one line."""
    errors = exc.errors()
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see configs/digits.yaml for all fields)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {message}{more}"
