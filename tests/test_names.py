"""Names the stores share are defined once: a key typed out twice drifts (a reader of
``"budget"`` beside a writer of ``"budgets"`` reads nothing, silently)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("search", "spaces", "pipelines", "evaluators", "dashboards")
DEFINITIONS = {ROOT / "search" / "store" / "records.py"}
"""Where the study and trial attribute keys are named (``records``)."""
BARE_ATTRIBUTE_KEY = re.compile(
    r"""(?:user_attrs(?:\.get)?\s*[\[(]|set_user_attr\(|set_trial_user_attr\([^,]+,)\s*f?["']"""
    r"""|["'][\w.]+["']\s+(?:not\s+)?in\s+[\w.]*user_attrs""")


def test_no_study_or_trial_attribute_key_is_a_bare_string_outside_records() -> None:
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py")) if path not in DEFINITIONS
             for number, line in enumerate(path.read_text().splitlines(), 1) if BARE_ATTRIBUTE_KEY.search(line)]
    assert not found, "use the key's name from search/store/records.py:\n" + "\n".join(found)


def test_the_check_finds_a_bare_key() -> None:
    assert BARE_ATTRIBUTE_KEY.search('start = study.user_attrs.get("budget", [0, 0])')
    assert BARE_ATTRIBUTE_KEY.search("if 'uid' not in study.user_attrs:")
    assert BARE_ATTRIBUTE_KEY.search('storage.set_trial_user_attr(trial._trial_id, "failure_kind", "stale")')
    assert not BARE_ATTRIBUTE_KEY.search("study.user_attrs.get(records.STUDY_BUDGET, [0, 0])")


def _metric_names() -> dict[str, str]:
    """Every metric key ``search/objectives.py`` names (constant -> value)."""
    from slimsearch.search import objectives

    return {name: value for name, value in vars(objectives).items()
            if name.isupper() and isinstance(value, str) and name != "QUALITY_ATTR"}


def _bare_metric_name() -> re.Pattern[str]:
    return re.compile(r"""["'](?:%s)["']""" % "|".join(map(re.escape, sorted(_metric_names().values()))))


def test_no_metric_name_is_a_bare_string_outside_objectives() -> None:
    bare = _bare_metric_name()
    definition = ROOT / "search" / "objectives.py"
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in ("search", "dashboards") for path in sorted((ROOT / folder).rglob("*.py")) if path != definition
             for number, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, "use the metric's name from search/objectives.py:\n" + "\n".join(found)


def test_the_check_finds_a_bare_metric_name() -> None:
    assert _metric_names()["LATENCY_P95_MS"] == "latency_p95_ms"
    assert _bare_metric_name().search("limit = metrics['latency_p95_ms']")
    assert not _bare_metric_name().search("limit = metrics[LATENCY_P95_MS]")
