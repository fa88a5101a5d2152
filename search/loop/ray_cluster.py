"""The Ray cluster a run uses, and what it leaves behind.

Joining a cluster (``search.ray.address``) only connects and disconnects. Starting Ray
here starts a handful of processes (GCS, raylet, agents, workers) and a session folder
under the temp directory; ``ray.shutdown`` stops the processes but keeps the folder, and
a driver killed with SIGKILL leaves processes running under PID 1 (measured: the
runtime-env agent even survives SIGTERM). So the run writes what it started to
``<output_dir>/ray-session-<study>.json``, removes it all when it ends, and the next run
removes what a killed one left. A run whose ``ray.init`` found another run's local
cluster (Ray connects to the newest one on the host) owns only its worker processes,
not the cluster's session folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

@contextlib.contextmanager
def ray_cluster(address: str | None, output_dir: Path, study_name: str, say: Callable[[str], None]) -> Iterator[None]:
    """Ray joined at ``address``, or started on this host and fully removed afterwards."""
    import ray

    record = output_dir / f"ray-session-{study_name}.json"
    leftover = Leftovers.read(record) if address is None else None
    if leftover and (removed := leftover.remove()):
        say(removed)
    ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    if address is not None:
        try:
            yield
        finally:
            ray.shutdown()  # disconnects from the cluster that was joined
        return
    children = psutil.Process().children(recursive=True)
    owns_cluster = any(p.name() == "gcs_server" for p in children)
    session = ray._private.worker._global_node.get_session_dir_path()  # noqa: SLF001 - no public accessor
    started = Leftovers(record, session if owns_cluster else None, [(p.pid, p.create_time()) for p in children])
    started.write()
    try:
        yield
    finally:
        ray.shutdown()  # stops the processes it started, not the session folder
        started.remove()
        if leftover:  # a killed run's worker starting as it died may have re-made its folder's skeleton
            leftover.remove()


@dataclass
class Leftovers:
    """What a run started: its processes (id, creation time) and the session folder it owns."""

    record: Path
    session_dir: str | None
    processes: list[tuple[int, float]]

    @classmethod
    def read(cls, record: Path) -> Leftovers | None:
        try:
            started = json.loads(record.read_text())
            return cls(record, started["session_dir"], [tuple(p) for p in started["processes"]])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # half-written by a killed run: nothing reliable to act on
            record.unlink()
            return None

    def write(self) -> None:
        self.record.write_text(json.dumps({"session_dir": self.session_dir, "processes": self.processes}))

    def remove(self) -> str:
        """Kill the recorded processes still alive (the same processes: creation times are
        compared, as process ids are reused) with their children, delete the session
        folder and the record; says what it did."""
        alive = self._session_processes()
        for pid, created in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if abs(process.create_time() - created) < 1:
                    alive += [process, *process.children(recursive=True)]  # the raylet's later workers too
        killed = []
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
                killed.append(process)
        psutil.wait_procs(killed, timeout=10)  # a dying process still writes logs into the session folder
        if self.session_dir:
            shutil.rmtree(self.session_dir, ignore_errors=True)
        self.record.unlink(missing_ok=True)
        return f"removed {len(killed)} Ray processes and the session folder a killed run left" if killed else ""

    def _session_processes(self) -> list[psutil.Process]:
        """Processes whose command line names the session folder, whatever their parent: a
        worker the raylet started as the run was killed outlives the raylet (no longer its
        child) and, once started, re-made the folder's skeleton after it was removed (a
        full test-suite run, 2026-11-30). Ray gives every worker ``--session-name``."""
        if not self.session_dir:
            return []
        name = Path(self.session_dir).name
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if process.pid != os.getpid() and any(name in arg for arg in process.info["cmdline"] or ()):
                found.append(process)
        return found
