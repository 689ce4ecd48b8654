"""A throwaway ``nats-server -js`` on a loopback port, its JetStream store in a temp directory."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.services._common import RunAs, find_binary, free_port, launch, missing


@dataclass
class NatsServer:
    """One nats-server with JetStream. ``start()``/``stop()`` may be called again (same port,
    same store directory: streams and their messages survive a restart)."""

    binary: str
    base: Path
    user: RunAs
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server; return once it greets a client with its ``INFO`` line."""
        store = self.base / "jetstream"
        store.mkdir(exist_ok=True)
        self.user.own(store)
        proc = subprocess.Popen(
            self.user.argv(
                self.binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(store),
                "-n",
                f"spoolkit-test-{self.port}",
            ),
            cwd=self.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.proc = proc
        self._drainer = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while not self.greets():
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"nats-server exited at start:\n{''.join(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server not ready in {timeout}s:\n{''.join(self.log)}")
            time.sleep(0.05)  # poll interval of the readiness predicate, not a synchronisation

    def greets(self) -> bool:
        """True when a TCP client gets the server's ``INFO`` line and ``PONG``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"CONNECT {}\r\nPING\r\n")
                seen = b""
                while b"PONG" not in seen:
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    seen += chunk
                return seen.startswith(b"INFO")
        except OSError:
            return False

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            self.log.append(chunk.decode(errors="replace"))

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def start_nats() -> NatsServer:
    """Start an independent ``nats-server -js``; skip or fail (CI=true) when not installed."""
    binary = find_binary("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
    if binary is None:
        missing("nats-server")
    return launch("spoolkit-nats-", partial(NatsServer, binary), NatsServer.start)
