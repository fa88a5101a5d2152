"""Run the benchmark suite and rewrite the results block of ``benchmarks/README.md`` from its output.

Each script's printed tables are kept in ``benchmarks/results/<script>.md`` (so one
script can be re-run alone with ``--only`` and the results page still shows the others' last
runs, each headed by its own date, commit and hardware); ``goal:`` lines become the goal
table at the top. Script logs (Ray, MLflow chatter) go to ``slimsearch-out/bench-logs``.

    .venv/bin/python benchmarks/run_all.py [--only throughput --only compression] [--readme-only]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from common import provenance

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results"
LOGS = HERE.parent / "slimsearch-out" / "bench-logs"
SCRIPTS = ("latency_noise", "retest", "probe_cost", "busy_host", "teacher_agreement", "half_precision", "latency_integrity", "parallel_strategies", "cache_reuse", "throughput",
           "search_quality", "early_stopping", "compression", "minilm", "runtimes", "families",
           "channel_alignment")
START, END = "<!-- results:start (written by benchmarks/run_all.py) -->", "<!-- results:end -->"
# What libraries print to stdout on their own (Ray Tune's experiment box) is not a result.
SUITE = "_suite.md"
CHATTER = re.compile(r"^[╭│├╰]|^View detailed results here")


def run(script: str) -> str:
    """Run one script, echo its stdout live, return it as markdown."""
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(LOGS / f"{script}.log", "w") as log:
        process = subprocess.Popen([sys.executable, f"{script}.py"], cwd=HERE, stdout=subprocess.PIPE, stderr=log,
                                   text=True)
        lines = []
        for line in process.stdout or []:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    if process.wait():
        raise SystemExit(f"benchmarks/{script}.py failed (exit {process.returncode}); see {LOGS / f'{script}.log'}")
    print(f"[{script}: {time.monotonic() - started:.0f} s]", flush=True)
    return "\n".join(f"**{line[2:]}**" if line.startswith("# ") else line for line in lines) + "\n"


def without_chatter(text: str) -> str:
    kept = [line for line in text.splitlines() if not CHATTER.search(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)) + "\n"


def goal_table(sections: dict[str, str]) -> str:
    """Each goal's newest verdict. A results file may keep earlier runs below its newest
    (runs of a single script pasted in by hand, newest first), so a goal named again
    further down is an older reading of it."""
    rows = ["| goal | measured | target | verdict | script |", "|---|---|---|---|---|"]
    seen: set[str] = set()
    for script, text in sections.items():
        for line in text.splitlines():
            name = line[6:].split(" | ")[0]
            if line.startswith("goal: ") and name not in seen:
                seen.add(name)
                rows.append(f"| {line[6:]} | {script} |")
    return "\n".join(rows) + "\n"


def rewrite_readme(sections: dict[str, str]) -> None:
    body = "\n\n".join(without_chatter(text).strip() for text in sections.values())
    suite = (RESULTS / SUITE).read_text().strip() + "\n\n" if (RESULTS / SUITE).exists() else ""
    block = f"{START}\n\n{suite}{goal_table(sections)}\n{body}\n\n{END}"
    readme = README.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"{README} has no results block ({START} ... {END})")
    README.write_text(pattern.sub(lambda _: block, readme))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", action="append", choices=SCRIPTS, help="re-run only these scripts")
    parser.add_argument("--readme-only", action="store_true", help="rewrite benchmarks/README.md from the saved results")
    args = parser.parse_args()
    chosen = [] if args.readme_only else args.only or SCRIPTS
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    for script in chosen:
        (RESULTS / f"{script}.md").write_text(run(script))
    sections = {s: (RESULTS / f"{s}.md").read_text() for s in SCRIPTS if (RESULTS / f"{s}.md").exists()}
    minutes = (time.monotonic() - started) / 60
    if chosen == SCRIPTS:
        (RESULTS / SUITE).write_text(f"Last full suite: {minutes:.1f} min ({provenance()}).\n")
    rewrite_readme(sections)
    print(f"suite: {len(chosen)} scripts in {minutes:.1f} min; benchmarks/README.md results rewritten")


if __name__ == "__main__":
    main()
