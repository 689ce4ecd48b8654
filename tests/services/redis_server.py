"""A throwaway redis-server on a loopback port, with no persistence."""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.services._common import RunAs, find_binary, free_port, launch, missing

_READY = b"Ready to accept connections"


@dataclass
class RedisServer:
    """One redis-server process. ``start()``/``stop()`` may be called again (same port)."""

    binary: str
    base: Path
    user: RunAs
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and return once it logs that it accepts connections."""
        proc = subprocess.Popen(
            self.user.argv(
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base),
                "--daemonize",
                "no",
                "--logfile",
                "",
            ),
            cwd=self.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.proc = proc
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        # Raw reads on the descriptor: a buffered readline could swallow the ready line into
        # Python's buffer while select() waits on the (then empty) pipe.
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while _READY not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise RuntimeError(f"redis-server not ready in {timeout}s:\n{seen.decode()}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.stop()
                    raise RuntimeError(f"redis-server exited at start:\n{seen.decode()}")
                seen += chunk
        self.log.append(seen.decode(errors="replace"))
        # Keep reading its log so the pipe never fills; the thread ends when redis exits.
        self._drainer = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._drainer.start()

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            self.log.append(chunk.decode(errors="replace"))

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.join(timeout=10)  # EOF follows the exit at once
        assert proc.stdout is not None
        proc.stdout.close()


def start_redis() -> RedisServer:
    """Start an independent redis-server; skip or fail (CI=true) when it is not installed."""
    binary = find_binary("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
    if binary is None:
        missing("redis-server")
    return launch("spoolkit-redis-", partial(RedisServer, binary), RedisServer.start)
