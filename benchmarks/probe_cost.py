"""What paired timing costs: one probe's wall time, today's protocol against the one it replaced.

The probe of commit ``29e6216^`` (20 warm-up calls, then rounds of 30 timed calls) and
today's (``warmup_s`` of calls, rounds of ``round_s`` seconds of candidate blocks between
reference blocks) time the same four saved artifacts -- the digits and digits-transformer
teachers, fp32 and int8 -- each in a fresh probe process as in a trial, with each version's
default protocol, in one sitting and in the order old new new old old new (a drift of
the host's speed weighs on both alike). The old probe runs from a git worktree of that
commit. Judged by the mean wall time per probe, new / old (goal <= 1.5).

    .venv/bin/python benchmarks/probe_cost.py      # ~3 min on 2 cores
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from slimsearch.evaluators import save_artifact
from slimsearch.pipelines.quantize import quantize

from common import BATCH, goal, provenance, teacher

BEFORE = "29e6216^"
"""The last commit whose probe counted calls (warm-up 20, repeats 30)."""
ORDER = ("old", "new", "new", "old", "old", "new")
FOLDERS = ("search", "spaces", "evaluators", "pipelines", "dashboards")
PROBE = """
import json, sys, time
from pathlib import Path
import torch
from slimsearch.evaluators import RankPlan, TimingProtocol, measure_serving
walls = {}
for artifact, batch in json.loads(sys.argv[1]):
    plan = RankPlan("single", 1, [artifact], tolerance=1e-4, weight_bytes=[0])
    started = time.perf_counter()
    measure_serving(Path(artifact), plan, torch.load(batch, weights_only=True), threads=1, protocol=TimingProtocol(),
                    timeout_s=600)
    walls[artifact] = time.perf_counter() - started
print(json.dumps(walls))
"""


def artifacts(root: Path) -> list[tuple[str, str]]:
    """(artifact, batch file) of each teacher at fp32 and int8, saved as a trial saves them."""
    saved = []
    for name in ("digits", "digits-transformer"):
        task, model = teacher(name)
        example = task.serving_batch(BATCH)
        batch = root / f"{name}.batch.pt"
        torch.save(example, batch)
        for bits in (32, 8):
            served = quantize(model, bits, None, task.train[0][:256]).serving
            saved.append((str(save_artifact("torch", served, example, root / f"{name}-{bits}.pt")), str(batch)))
    return saved


def old_code(root: Path) -> Path:
    """A path holding ``slimsearch`` as commit BEFORE had it (a worktree, its folders linked in)."""
    tree = root / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), BEFORE], check=True,
                   cwd=Path(__file__).parent)
    package = root / "path" / "slimsearch"
    package.mkdir(parents=True)
    for folder in FOLDERS:
        (package / folder).symlink_to(tree / folder)
    return root / "path"


def main() -> None:
    print(f"# serving probe wall time, call-count protocol ({BEFORE}) vs paired timing -- {provenance()}")
    with tempfile.TemporaryDirectory(prefix="slimsearch-probe-cost-") as scratch:
        root = Path(scratch)
        saved = artifacts(root)
        old_path = old_code(root)
        walls: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
        try:
            for which in ORDER:
                env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                if which == "old":
                    env["PYTHONPATH"] = str(old_path)
                done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(saved)], env=env, check=True,
                                      capture_output=True, text=True)
                for artifact, seconds in json.loads(done.stdout.splitlines()[-1]).items():
                    walls[which].setdefault(Path(artifact).stem, []).append(seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(root / "tree")], cwd=Path(__file__).parent)
    print("| artifact | call-count probe s (median of 3) | paired-timing probe s (median of 3) | ratio |")
    print("|---|---|---|---|")
    for name in walls["old"]:
        old, new = statistics.median(walls["old"][name]), statistics.median(walls["new"][name])
        print(f"| {name} | {old:.2f} | {new:.2f} | {new / old:.2f}x |")
    old_mean = statistics.fmean(s for v in walls["old"].values() for s in v)
    new_mean = statistics.fmean(s for v in walls["new"].values() for s in v)
    goal("probe wall time per trial, paired timing / call-count protocol (mean of 4 artifacts x 3 probes)",
         f"{new_mean:.2f} s / {old_mean:.2f} s = {new_mean / old_mean:.2f}x", "<= 1.5x", new_mean / old_mean <= 1.5)


if __name__ == "__main__":
    main()
