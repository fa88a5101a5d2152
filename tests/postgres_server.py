"""A throwaway PostgreSQL server on loopback, from the Debian package's binaries.

The server runs as the ``postgres`` user when the tests run as root (``initdb`` refuses
root), trusts local connections, listens on a free port of 127.0.0.1 only, and is
stopped and deleted at the end of the test session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class PostgresUnavailable(RuntimeError):
    pass


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    binaries = Path(os.path.realpath(found[-1])).parent  # PATH entries may be symlinks to single tools
    if not (binaries / "createdb").exists():
        raise PostgresUnavailable("no PostgreSQL server binaries found (apt-get install postgresql, or make postgres)")
    return binaries


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; ``pause`` stops it (a restart, as a fault test needs) and ``resume`` starts it again."""

    url: str
    pg_ctl: list[str]
    """``pg_ctl -D DATA`` as the server's owner: add ``start`` / ``stop`` arguments."""
    start_options: list[str]

    def pause(self) -> None:
        subprocess.run([*self.pg_ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True, text=True)

    def resume(self) -> None:
        subprocess.run([*self.pg_ctl, *self.start_options, "start"], check=True, capture_output=True, text=True)


def running_server(databases: tuple[str, ...]) -> Iterator[PostgresServer]:
    """Yield a server at ``postgresql://slimsearch@127.0.0.1:PORT/`` with ``databases`` created."""
    binaries = _binaries()
    root = Path(tempfile.mkdtemp(prefix="slimsearch-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    server = PostgresServer(f"postgresql://slimsearch@127.0.0.1:{port}/", [*prefix, str(binaries / "pg_ctl"), "-D", str(data)],
                            ["-l", str(root / "server.log"), "-w", "-o",
                             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"])

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "slimsearch")
        server.resume()
        for name in databases:
            run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "slimsearch", name)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"could not start PostgreSQL: {str(exc.stderr).strip()[-300:]}") from exc
    try:
        yield server
    finally:
        subprocess.run([*server.pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
