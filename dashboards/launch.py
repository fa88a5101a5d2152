"""Start the review servers on loopback: the MLflow UI and, if asked, optuna-dashboard.

The MLflow UI is started with job execution disabled (its job consumers cost ~2 GiB RSS
and the review needs none) and bound to 127.0.0.1 unless told otherwise. Servers are
started in their own process group so stopping them also stops their workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from slimsearch.spaces.errors import SlimsearchError


class LaunchError(SlimsearchError, RuntimeError):
    """A server could not be started; the message says which and why."""


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_mlflow_ui(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, timeout_s: float = 60) -> Server:
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return _start("MLflow UI", command, env, host, port, timeout_s)


def start_optuna_dashboard(storage_url: str, host: str = "127.0.0.1", port: int = 8080, timeout_s: float = 60) -> Server:
    executable = shutil.which("optuna-dashboard") or os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    if not os.path.exists(executable):
        raise LaunchError("optuna-dashboard is not installed; pip install optuna-dashboard")
    command = [executable, storage_url, "--host", host, "--port", str(port)]
    if storage_url.startswith("journal:///"):  # slimsearch's URL for Optuna's journal file
        command[1:2] = [storage_url.removeprefix("journal:///"), "--storage-class", "JournalFileStorage"]
    return _start("optuna-dashboard", command, dict(os.environ), host, port, timeout_s)


def _start(name: str, command: list[str], env: dict[str, str], host: str, port: int, timeout_s: float) -> Server:
    if _port_open(host, port):
        raise LaunchError(f"{name}: port {port} on {host} is already in use; pass another --port")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    server = Server(name, f"http://{host}:{port}", process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            last = (process.stderr.read() if process.stderr else "").strip().splitlines()[-1:] or ["no output"]
            raise LaunchError(f"{name} exited with code {process.returncode}: {last[0][:300]}")
        if _port_open(host, port):
            return server
        time.sleep(0.3)
    server.stop()
    raise LaunchError(f"{name} did not start listening on {host}:{port} within {timeout_s:.0f}s")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
