"""From a ``SpaceSpec`` and an Optuna trial to one resolved ``Candidate``.

Parameters are conditional: ``student.*`` only exists for distilled students,
``quantize.float_dtype`` only for 16 bits and ``parallel.degree`` only when the strategy
is not ``single``. That keeps the sampler's model of the space honest (no parameters
that do nothing); MLflow gets the candidate's resolved view (``Candidate.flat``).
"""

from __future__ import annotations

import itertools
import os
import random
from typing import Any, Callable, Iterator

import optuna

from slimsearch.spaces.candidate import Candidate, StudentChoice
from slimsearch.spaces.runtimes import DEFAULT_RUNTIME, runtime_spec
from slimsearch.spaces.spec import SpaceSpec

def suggest_candidate(trial: optuna.trial.BaseTrial, spec: SpaceSpec, cpu_count: int | None = None) -> Candidate:
    """Ask the trial for every parameter that matters for this candidate, and nothing else.

    Multi-rank plans draw threads per rank only from the choices that fit this host's
    cores at the largest degree, under their own name (``parallel.rank_threads``: Optuna
    needs one fixed choice list per name), so the sampler does not waste trials on plans
    the host cannot run.
    """
    student = _suggest_student(trial, spec)
    prune = spec.prune
    prune_ratio = (
        trial.suggest_float("prune.ratio", prune.low, prune.high, step=prune.step)
        if prune.high > prune.low
        else prune.low
    )
    importance, scope, steps = "l1", "uniform", 1
    if prune_ratio > 0:
        importance = str(_choose(trial, "prune.importance", prune.importance))
        scope = str(_choose(trial, "prune.scope", prune.scope))
        steps = int(_choose(trial, "prune.steps", prune.steps))
    rank_ratio = float(_choose(trial, "lowrank.rank_ratio", spec.lowrank.ratios))
    bits = int(trial.suggest_categorical("quantize.bits", spec.quantize.bits))
    float_dtype = (
        str(trial.suggest_categorical("quantize.float_dtype", spec.quantize.float16_dtypes))
        if bits == 16
        else None
    )
    qat = bool(_choose(trial, "quantize.qat", spec.quantize.qat)) if bits == 8 else False
    strategy = str(trial.suggest_categorical("parallel.strategy", spec.parallel.strategies))
    degree = 1 if strategy == "single" else int(trial.suggest_categorical("parallel.degree", spec.parallel.degree))
    threads_name = "parallel.threads" if strategy == "single" else "parallel.rank_threads"
    threads = int(trial.suggest_categorical(threads_name, _thread_choices(spec, strategy, cpu_count)))
    runtime = DEFAULT_RUNTIME
    if strategy == "single" and not qat and (runtimes := runtime_choices(spec, bits)):
        runtime = str(_choose(trial, *runtimes))
    return Candidate(
        student=student,
        prune_ratio=round(float(prune_ratio), 6),
        prune_importance=importance,
        prune_scope=scope,
        prune_steps=steps,
        bits=bits,
        float_dtype=float_dtype,
        qat=qat,
        strategy=strategy,
        degree=degree,
        threads=threads,
        runtime=runtime,
        rank_ratio=round(rank_ratio, 6),
    )


def _choose(trial: optuna.trial.BaseTrial, name: str, choices: list[Any]) -> Any:
    """Ask the trial only when there is a choice: options added after the first release
    (pruning method, QAT, runtime, feature hints, student budget) stay out of the parameters of studies that do not
    search them, so those studies' trials look as they always did."""
    return trial.suggest_categorical(name, choices) if len(choices) > 1 else choices[0]


def runtime_choices(spec: SpaceSpec, bits: int) -> tuple[str, list[str]] | None:
    """The Optuna parameter and choices for the serving runtime of a single-process,
    non-QAT candidate at ``bits``, or ``None`` where only torch can serve it.

    onnxruntime serves 32 and 8 bits (its own int8); torch_compile only float32 (int8 FX
    graphs do not ``torch.export``). Optuna needs one fixed choice list per parameter
    name, so int8 asks under its own name when its list is shorter.
    """
    choices = [r for r in spec.parallel.runtimes if bits in runtime_spec(r).bits]
    if not choices:
        return None
    return ("parallel.runtime" if choices == spec.parallel.runtimes else "parallel.int8_runtime"), choices


def _thread_choices(spec: SpaceSpec, strategy: str, cpu_count: int | None) -> list[int]:
    if strategy == "single":
        return spec.parallel.threads
    cores = cpu_count or os.cpu_count() or 1
    fitting = [t for t in spec.parallel.threads if t * max(spec.parallel.degree) <= cores]
    return fitting or spec.parallel.threads  # nothing fits: rejection_reason will say so


def _suggest_student(trial: optuna.trial.BaseTrial, spec: SpaceSpec) -> StudentChoice | None:
    s = spec.student
    kinds = [k for k, allowed in (("teacher", s.keep_teacher), ("distilled", s.distill)) if allowed]
    if trial.suggest_categorical("student", kinds) == "teacher":
        return None
    return StudentChoice(
        width=float(trial.suggest_categorical("student.width", s.width)),
        depth=int(trial.suggest_categorical("student.depth", s.depth)),
        temperature=float(trial.suggest_categorical("student.temperature", s.temperature)),
        alpha=float(trial.suggest_categorical("student.alpha", s.alpha)),
        feature_weight=float(_choose(trial, "student.feature_weight", s.feature_weight)),
        epochs=int(_choose(trial, "student.epochs", s.epochs)) if s.epochs else None,
        init=str(_choose(trial, "student.init", s.init)),
    )


def rejection_reason(candidate: Candidate, batch_size: int, cpu_count: int | None = None) -> str | None:
    """Why this candidate cannot be served on this host, or ``None`` if it can."""
    cores = cpu_count or os.cpu_count() or 1
    if candidate.degree * candidate.threads > cores:
        return (
            f"{candidate.strategy} needs degree x threads = {candidate.degree * candidate.threads} cores "
            f"but this host has {cores}; lower space.parallel.degree or threads"
        )
    if reason := runtime_spec(candidate.runtime).rejection(candidate.strategy, candidate.bits, candidate.qat):
        return reason
    if batch_size % candidate.degree:
        return f"batch size {batch_size} does not split evenly over {candidate.degree} ranks"
    return None


def teacher_params(spec: SpaceSpec, bits: int = 32) -> dict[str, Any] | None:
    """Optuna params of the teacher, unpruned, served single-process at ``bits`` (by torch
    where the space offers it), if the space contains that candidate."""
    if not spec.student.keep_teacher:
        return None
    plain = _plainly_served(spec, bits)
    return None if plain is None else {"student": "teacher", **plain}


def cut_student_params(spec: SpaceSpec) -> dict[str, Any] | None:
    """Optuna params of the smallest student cut from the teacher's own layers (the
    space's least width and depth, ``student.init: teacher``) with post-training int8
    where the space has it, if the space contains that candidate.

    For a pretrained teacher this is the far end of the front that a from-scratch search
    reaches last: the DistilBERT recipe (keep some of the teacher's layers, distil) plus
    the cheapest quantization. Measured like any other trial; if it misses the accuracy
    constraint the morning review says so.
    """
    if not (spec.student.distill and "teacher" in spec.student.init):
        return None
    plain = _plainly_served(spec, 8) or _plainly_served(spec, 32)
    return None if plain is None else {**_student_params(spec, min(spec.student.width), min(spec.student.depth),
                                                          "teacher"), **plain}


def full_student_params(spec: SpaceSpec) -> dict[str, Any] | None:
    """Optuna params of the largest student the space allows (its greatest width and depth,
    from the teacher's layers where it may start from them), unpruned at full precision
    where the space has it, if the space distils at all.

    It answers first whether distillation can meet the accuracy constraint anywhere: every
    smaller student is a compromise of it. With the teacher anchors alone, TPE's first good
    trials were all the teacher's, and on the digits table 17 of 80 replays had measured no
    student that met the constraint by trial 40 (benchmarks/results/search_quality.md). One
    training run, the space's costliest.
    """
    s = spec.student
    if not s.distill:
        return None
    plain = _plainly_served(spec, 32) or _plainly_served(spec, 8)
    init = "teacher" if "teacher" in s.init else s.init[0]
    return None if plain is None else {**_student_params(spec, max(s.width), max(s.depth), init), **plain}


def _student_params(spec: SpaceSpec, width: float, depth: int, init: str) -> dict[str, Any]:
    """A student's Optuna params at ``width`` and ``depth``: the first temperature and loss
    mix, the least feature loss, the most epochs."""
    s = spec.student
    params: dict[str, Any] = {"student": "distilled", "student.width": width, "student.depth": depth,
                              "student.temperature": s.temperature[0], "student.alpha": s.alpha[0]}
    for name, choices, pick in (("student.feature_weight", s.feature_weight, min), ("student.epochs", s.epochs, max),
                                ("student.init", s.init, lambda _: init)):
        if len(choices) > 1:
            params[name] = pick(choices)
    return params


def _plainly_served(spec: SpaceSpec, bits: int) -> dict[str, Any] | None:
    """The compression and deployment params of an anchor: unpruned, not factorised, no
    QAT, single process at the most threads, served by torch where the space offers it --
    or ``None`` if the space has no such candidate at ``bits``."""
    if bits not in spec.quantize.bits or "single" not in spec.parallel.strategies:
        return None
    if spec.prune.low > 0 or 0.0 not in spec.lowrank.ratios or (bits == 8 and False not in spec.quantize.qat):
        return None
    params: dict[str, Any] = {
        "quantize.bits": bits,
        "parallel.strategy": "single",
        "parallel.threads": max(spec.parallel.threads),
    }
    if spec.prune.high > spec.prune.low:
        params["prune.ratio"] = 0.0
    if len(spec.lowrank.ratios) > 1:
        params["lowrank.rank_ratio"] = 0.0
    if bits == 8 and len(spec.quantize.qat) > 1:
        params["quantize.qat"] = False
    name, runtimes = runtime_choices(spec, bits) or ("", [])
    if len(runtimes) > 1:
        params[name] = DEFAULT_RUNTIME if DEFAULT_RUNTIME in runtimes else runtimes[0]
    return params


def anchor_params(spec: SpaceSpec) -> list[dict[str, Any]]:
    """The first trials of a fresh study: the teacher as it is, the teacher with
    post-training int8, where students may start from the teacher's layers the smallest
    such student with int8, and the largest student unpruned -- whichever the space contains.

    The uncompressed teacher is the point every front is judged against; plain int8 of
    the teacher is the cheapest compression any deployment considers first, the cut
    student the far end of the front and the largest student the most accurate one
    distillation offers; so the morning review always shows how far the search got beyond
    them. All are measured like any other trial, never assumed.
    """
    anchors = [teacher_params(spec, 32), teacher_params(spec, 8), cut_student_params(spec), full_student_params(spec)]
    return [params for index, params in enumerate(anchors) if params and params not in anchors[:index]]


def sample_candidates(spec: SpaceSpec, n: int, seed: int = 0) -> list[Candidate]:
    """``n`` random candidates drawn exactly as the search would draw them (in-memory study)."""
    return [candidate for candidate, _ in sample_trials(spec, n, seed)]


def sample_trials(spec: SpaceSpec, n: int, seed: int = 0) -> list[tuple[Candidate, dict[str, Any]]]:
    """Like :func:`sample_candidates`, with each candidate's Optuna params (to enqueue the
    same candidates in several studies, e.g. to compare backends on equal work)."""
    return list(itertools.islice(_random_trials(spec, seed), n))


def unmeasured_params(spec: SpaceSpec, proposed: set[str], seed: int, draws: int,
                      servable: Callable[[Candidate], bool] = lambda _: True) -> dict[str, Any] | None:
    """Optuna params of a random candidate whose fingerprint is not in ``proposed`` (measured,
    or tried and rejected) and that is ``servable`` (the caller's rejection check), or None
    if ``draws`` random draws found none.

    A sampler that has converged on a discrete space proposes only measured candidates
    (TPE on the 680-candidate digits table: 1,600 proposals for 74 new ones); a random
    unmeasured candidate keeps the night's run exploring instead of stopping early.
    """
    for candidate, params in itertools.islice(_random_trials(spec, seed), draws):
        if candidate.fingerprint() not in proposed and servable(candidate):
            return params
    return None


def _random_trials(spec: SpaceSpec, seed: int) -> Iterator[tuple[Candidate, dict[str, Any]]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        trial = study.ask()
        yield suggest_candidate(trial, spec), dict(trial.params)


def grid_params(spec: SpaceSpec, cpu_count: int | None = None,
                fixed_params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every candidate of the space as Optuna params (or every one that shares
    ``fixed_params``): the exhaustive grid, conditional parameters included only where
    they exist. Meant for small spaces (benchmarks) or few free parameters."""
    grid: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = [dict(fixed_params or {})]
    while pending:
        fixed = pending.pop()
        trial = _BranchingTrial(fixed)
        try:
            suggest_candidate(trial, spec, cpu_count)  # type: ignore[arg-type]
        except _Unfixed as branch:
            pending.extend({**fixed, branch.name: choice} for choice in reversed(branch.choices))
            continue
        grid.append(fixed)
    return grid


DEPLOYMENT_PREFIX = "parallel."
"""Parameters that choose how a built model is served (strategy, degree, threads,
runtime), not which model is built: changing only these needs no training."""
POST_TRAINING_QUANTIZATION = ("quantize.bits", "quantize.float_dtype", "quantize.qat")
"""Parameters that choose how a trained model is quantized; without QAT that is a
conversion after training (``pipelines.build``), so a deployment choice like the above."""


def trained_model_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params of ``params`` that choose what is trained: every other one is a deployment
    choice of the same trained model. A QAT model's bit width was trained for, so it stays."""
    deployment = DEPLOYMENT_PREFIX, *(() if params.get("quantize.qat") else POST_TRAINING_QUANTIZATION)
    return {name: value for name, value in params.items() if not name.startswith(deployment)}


def deployment_variants(spec: SpaceSpec, params: dict[str, Any], limit: int, seed: int, batch_size: int,
                        cpu_count: int | None = None, cost: Callable[[Candidate], float | None] | None = None,
                        above_bits: int = 0, known: Callable[[Candidate], bool] = lambda _: False
                        ) -> list[dict[str, Any]]:
    """Up to ``limit`` other ways the space deploys the trained model of ``params``: another
    post-training bit width, runtime, thread count or strategy. They re-use its trained
    stages and cost a conversion and a probe, not a training run. Plans this host or
    ``batch_size`` cannot serve, and QAT (a training run), are left out; so are bit widths
    up to ``above_bits`` (a model too inaccurate at its own bit width is worth measuring
    only at a higher one) and candidates ``known`` to the caller (measured or queued: a
    variant of the teacher was its own int8 anchor, queued before it ran). The order is
    the caller's ``cost`` estimate, cheapest first (the search passes its cost predictor's
    latency), or seeded random where there is no estimate.

    Measured on the digits table: the fastest deployable candidate is one model's fp32
    onnxruntime build while TPE finds the same model at int8 on torch, so variants that
    kept the bit width could not reach it (benchmarks/results/search_quality.md).
    """
    model = trained_model_params(params)
    qat = bool(params.get("quantize.qat"))
    variants = []
    for variant in grid_params(spec, cpu_count, model):
        candidate = suggest_candidate(optuna.trial.FixedTrial(variant), spec, cpu_count)
        if (variant != params and candidate.qat == qat and candidate.bits > above_bits and not known(candidate)
                and rejection_reason(candidate, batch_size, cpu_count) is None):
            variants.append((variant, candidate))
    random.Random(seed).shuffle(variants)
    if cost is not None and (estimates := [cost(candidate) for _, candidate in variants]) and None not in estimates:
        variants = [variant for _, variant in sorted(zip(estimates, variants), key=lambda pair: pair[0])]
    return [variant for variant, _ in variants[:limit]]


def unpruned_twin_params(spec: SpaceSpec, params: dict[str, Any]) -> dict[str, Any] | None:
    """Optuna params of the same distilled student as ``params``, deployed the same way but
    not pruned, if ``params`` prunes one and the space holds the unpruned model.

    The student's distillation is cached, so the twin costs a conversion and a probe. A
    pruned student that met the accuracy constraints says its unpruned self is likely the
    more accurate end of the same trade: on the digits table the only students that classify
    every validation row right were unpruned ones, and TPE, drawn to the faster pruned
    models, found them in fewer than half of its replays (benchmarks/results/search_quality.md).
    """
    if (params.get("student") != "distilled" or not float(params.get("prune.ratio", 0.0)) or spec.prune.low > 0
            or params.get("quantize.qat")):  # a QAT twin would be another training run
        return None
    return {**{name: value for name, value in params.items() if not name.startswith("prune.")}, "prune.ratio": 0.0}


def follow_up_params(spec: SpaceSpec, params: dict[str, Any], limit: int, seed: int, batch_size: int, *,
                     accurate: bool, cost: Callable[[Candidate], float | None] | None = None,
                     known: Callable[[Candidate], bool] = lambda _: False) -> list[dict[str, Any]]:
    """What to measure next after the new model of ``params`` (``accurate``: it met the
    accuracy constraints): its unpruned twin if it is accurate, then ``limit`` of its
    :func:`deployment_variants` (only more precise ones if it is not). Each re-uses trained
    stages; none is ``known`` to the caller (measured or queued). ``limit`` 0: none at all."""
    if not limit:
        return []
    candidate = suggest_candidate(optuna.trial.FixedTrial(params), spec)
    twin = unpruned_twin_params(spec, params) if accurate else None
    twins = [twin] if twin and not known(twin_candidate := suggest_candidate(optuna.trial.FixedTrial(twin), spec)) \
        and rejection_reason(twin_candidate, batch_size) is None else []
    return twins + deployment_variants(spec, params, limit, seed, batch_size, cost=cost,
                                       above_bits=0 if accurate else candidate.bits, known=known)


class _Unfixed(Exception):
    def __init__(self, name: str, choices: list[Any]):
        self.name, self.choices = name, choices


class _BranchingTrial:
    """Answers the parameters already fixed and stops at the first one that is not, so
    :func:`grid_params` learns the next conditional parameter and its choices."""

    def __init__(self, fixed: dict[str, Any]):
        self.fixed = fixed

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if name not in self.fixed:
            raise _Unfixed(name, list(choices))
        return self.fixed[name]

    def suggest_float(self, name: str, low: float, high: float, *, step: float) -> float:
        count = int(round((high - low) / step)) + 1
        return self.suggest_categorical(name, [round(low + i * step, 6) for i in range(count)])


def describe_space(spec: SpaceSpec) -> list[tuple[str, str, str]]:
    """Rows of (parameter, values, condition) for printing the space."""
    s, q, p, pr = spec.student, spec.quantize, spec.parallel, spec.prune
    kinds = [k for k, allowed in (("teacher", s.keep_teacher), ("distilled", s.distill)) if allowed]
    int8_name, int8_runtimes = runtime_choices(spec, 8) or ("parallel.runtime", [])
    return [
        ("student", ", ".join(kinds), "always"),
        ("student.width", _join(s.width), "student = distilled"),
        ("student.depth", _join(s.depth), "student = distilled"),
        ("student.temperature", _join(s.temperature), "student = distilled"),
        ("student.alpha", _join(s.alpha), "student = distilled"),
        ("student.feature_weight", _join(s.feature_weight) + "  (0 = logits only)", "student = distilled"),
        ("student.epochs", _join(s.epochs) or "training.distill_epochs", "student = distilled"),
        ("student.init", _join(s.init) + "  (teacher = the teacher's layers, cut)", "student = distilled"),
        ("prune.ratio", f"{pr.low:g} .. {pr.high:g} step {pr.step:g}", "always"),
        ("prune.importance", _join(pr.importance), "prune.ratio > 0"),
        ("prune.scope", _join(pr.scope), "prune.ratio > 0"),
        ("prune.steps", _join(pr.steps) + "  (1 = one-shot)", "prune.ratio > 0"),
        ("lowrank.rank_ratio", _join(spec.lowrank.ratios) + "  (0 = not factorised)", "always"),
        ("quantize.bits", _join(q.bits) + "  (<8 = simulated fake-quant)", "always"),
        ("quantize.float_dtype", _join(q.float16_dtypes), "quantize.bits = 16"),
        ("quantize.qat", _join(q.qat) + "  (int8 quantization-aware fine-tuning)", "quantize.bits = 8"),
        ("parallel.strategy", _join(p.strategies), "always"),
        ("parallel.runtime", _join(p.runtimes), "single, no QAT, a bit width the runtime serves"),
        *([(int8_name, _join(int8_runtimes), "single, 8 bits, no QAT")] if int8_name != "parallel.runtime" else []),
        ("parallel.degree", _join(p.degree), "parallel.strategy != single"),
        ("parallel.threads", _join(p.threads), "parallel.strategy = single"),
        ("parallel.rank_threads", _join(p.threads) + "  (those that fit the host's cores)", "parallel.strategy != single"),
    ]


def _join(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
