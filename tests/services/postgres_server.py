"""A throwaway PostgreSQL cluster: initdb into a temp dir, pg_ctl start on a loopback port."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.services._common import RunAs, find_binary, free_port, launch, missing

# Quick to start and throwaway: no durability, little memory.
_SETTINGS = """
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 50
logging_collector = off
"""


def postgres_bindir() -> str | None:
    """The directory holding initdb/pg_ctl, or None when PostgreSQL is not installed."""
    initdb = find_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


@dataclass
class PostgresServer:
    """One PostgreSQL cluster. ``start()``/``stop()`` may be called again (same port)."""

    bindir: str
    base: Path
    user: RunAs
    port: int = field(default_factory=free_port)
    running: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            self.user.argv(*args),
            cwd=self.base,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if out.returncode != 0:
            log = self.base / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            command = " ".join(args[:2])
            raise RuntimeError(
                f"{command} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{tail}"
            )

    def init(self) -> None:
        self._run(
            f"{self.bindir}/initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS)
            conf.write(f"unix_socket_directories = '{self.base}'\n")

    def start(self) -> None:
        self._run(
            f"{self.bindir}/pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "postgres.log"),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._run(f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")


def start_postgres() -> PostgresServer:
    """initdb and start a fresh cluster; skip or fail (CI=true) when PostgreSQL is missing."""
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL (initdb, pg_ctl)")

    def boot(server: PostgresServer) -> None:
        server.init()
        server.start()

    return launch("spoolkit-pg-", partial(PostgresServer, bindir), boot)
