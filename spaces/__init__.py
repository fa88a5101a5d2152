"""The combined search space: pruning x bit width x student x parallel strategy.

``SpaceSpec`` is the declarative, validated part of the config; ``suggest_candidate``
turns one Optuna trial into one resolved, hashable ``Candidate`` (conditional
parameters are only asked for when they matter); ``rejection_reason`` says why a
resolved candidate cannot run here, so it is rejected with a reason rather than run
silently wrong.
"""

from slimsearch.spaces.candidate import Candidate, StudentChoice
from slimsearch.spaces.errors import SlimsearchError
from slimsearch.spaces.runtimes import (
    DEFAULT_RUNTIME,
    PLUGINS_VARIABLE,
    STRATEGIES,
    RuntimeSpec,
    Strategy,
    UnknownRuntime,
    export_formats,
    register,
    runtime_spec,
    runtime_specs,
)
from slimsearch.spaces.spec import (
    FLOAT16_DTYPES,
    LowRankSpec,
    ParallelSpec,
    PruneSpec,
    QuantizeSpec,
    SpaceSpec,
    StudentSpec,
)
from slimsearch.spaces.sampling import (
    InvalidCandidate,
    anchor_params,
    describe_space,
    deployment_variants,
    grid_params,
    rejection_reason,
    sample_candidates,
    sample_trials,
    suggest_candidate,
    teacher_params,
    unmeasured_params,
)

__all__ = [
    "Candidate",
    "SlimsearchError",
    "StudentChoice",
    "FLOAT16_DTYPES",
    "DEFAULT_RUNTIME",
    "PLUGINS_VARIABLE",
    "RuntimeSpec",
    "UnknownRuntime",
    "export_formats",
    "register",
    "runtime_spec",
    "runtime_specs",
    "STRATEGIES",
    "Strategy",
    "LowRankSpec",
    "ParallelSpec",
    "PruneSpec",
    "QuantizeSpec",
    "SpaceSpec",
    "StudentSpec",
    "InvalidCandidate",
    "anchor_params",
    "describe_space",
    "deployment_variants",
    "grid_params",
    "rejection_reason",
    "sample_candidates",
    "sample_trials",
    "suggest_candidate",
    "teacher_params",
    "unmeasured_params",
]
