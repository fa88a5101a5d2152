"""The combined search space: pruning x bit width x student x parallel strategy.

``SpaceSpec`` is the declarative, validated part of the config; ``suggest_candidate``
turns one Optuna trial into one resolved, hashable ``Candidate`` (conditional
parameters are only asked for when they matter); ``rejection_reason`` says why a
resolved candidate cannot run here, so it is rejected with a reason rather than run
silently wrong. ``runtimes`` is the table of serving runtimes and strategies.

The declaration (pydantic) and the sampling (Optuna) load on first use of one of their
names: the serving probe, started once per trial, imports this package only for the
runtime table and the error types, and starts ~0.3 s sooner without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slimsearch.spaces.candidate import Candidate, StudentChoice
from slimsearch.spaces.errors import InvalidCandidate, SlimsearchError
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

if TYPE_CHECKING:
    from slimsearch.spaces.sampling import (
        anchor_params,
        describe_space,
        deployment_variants,
        follow_up_params,
        grid_params,
        rejection_reason,
        sample_candidates,
        sample_trials,
        suggest_candidate,
        teacher_params,
        trained_model_params,
        unmeasured_params,
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

_ON_FIRST_USE = {
    **dict.fromkeys(("FLOAT16_DTYPES", "LowRankSpec", "ParallelSpec", "PruneSpec", "QuantizeSpec", "SpaceSpec",
                     "StudentSpec"), "slimsearch.spaces.spec"),
    **dict.fromkeys(("anchor_params", "describe_space", "deployment_variants", "follow_up_params", "grid_params",
                     "rejection_reason", "sample_candidates", "sample_trials", "suggest_candidate", "teacher_params",
                     "trained_model_params", "unmeasured_params"),
                    "slimsearch.spaces.sampling"),
}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Candidate",
    "SlimsearchError",
    "StudentChoice",
    "InvalidCandidate",
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
    "FLOAT16_DTYPES",
    "LowRankSpec",
    "ParallelSpec",
    "PruneSpec",
    "QuantizeSpec",
    "SpaceSpec",
    "StudentSpec",
    "anchor_params",
    "describe_space",
    "deployment_variants",
    "follow_up_params",
    "grid_params",
    "rejection_reason",
    "sample_candidates",
    "sample_trials",
    "suggest_candidate",
    "teacher_params",
    "trained_model_params",
    "unmeasured_params",
]
assert set(__all__) >= set(_ON_FIRST_USE)
