"""A throwaway rabbitmq-server (and its own epmd) on loopback ports, in a private directory.

The node gets free ports for AMQP, Erlang distribution and epmd, a unique node name, and its
Mnesia database, logs, config and Erlang cookie (``HOME``) in a temp directory. epmd is started
by us in the foreground on its private port (never ``-daemon``), so ``stop()`` ends both and
nothing outlives the suite. Readiness is an AMQP login that succeeds, never a sleep.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.services._common import RunAs, find_binary, free_port, launch, missing

USER = "spool"
PASSWORD = "s3cret-Rabbit"  # noqa: S105 - a throwaway test broker; masked in every error the sink raises: the tests check it


@dataclass
class RabbitServer:
    """One rabbitmq-server node. ``start()``/``stop()`` may be called again (same ports, same
    Mnesia directory: durable queues and persistent messages survive a restart)."""

    script: str
    epmd: str
    base: Path
    user: RunAs
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    epmd_proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``amqp://spool:PASSWORD@127.0.0.1:PORT/%2F`` (the default vhost ``/``)."""
        return f"amqp://{USER}:{PASSWORD}@127.0.0.1:{self.port}/%2F"

    @property
    def nodename(self) -> str:
        return f"spoolkit-test-{self.port}@localhost"

    def _env(self) -> dict[str, str]:
        conf = self.base / "rabbitmq.conf"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),  # the Erlang cookie is written here
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_CONFIG_FILE=str(conf),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=("-kernel inet_dist_use_interface {127,0,0,1}"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def _prepare(self) -> None:
        for sub in ("mnesia", "log"):
            path = self.base / sub
            path.mkdir(exist_ok=True)
            self.user.own(path)
        files = {
            "rabbitmq.conf": (
                f"default_user = {USER}\n"
                f"default_pass = {PASSWORD}\n"
                "loopback_users = none\n"
                "disk_free_limit.absolute = 1MB\n"
                "log.console = true\n"
                "log.console.level = warning\n"
                "log.file = false\n"
            ),
            "advanced.config": "[].\n",
            "rabbitmq-env.conf": "",
            "enabled_plugins": "[].\n",
        }
        for name, text in files.items():
            path = self.base / name
            if not path.exists():
                path.write_text(text)
                self.user.own(path)

    def start(self, timeout: float = 60.0) -> None:
        """Start epmd and the node; return once an AMQP login succeeds."""
        self._prepare()
        env = self._env()
        if self.epmd_proc is None:
            self.epmd_proc = subprocess.Popen(
                self.user.argv(self.epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"),
                cwd=self.base,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = subprocess.Popen(
            self.user.argv(self.script),
            cwd=self.base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() reaches erl and its helpers
        )
        self.proc = proc
        self._drainer = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while not self.accepts_login():
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"rabbitmq-server exited at start:\n{''.join(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rabbitmq-server not ready in {timeout}s:\n{''.join(self.log)}")
            time.sleep(0.1)  # poll interval of the readiness predicate, not a synchronisation

    def accepts_login(self) -> bool:
        """True when an AMQP connection with the test credentials opens."""
        import pika  # the sink's driver, only needed once the server runs

        params = pika.URLParameters(
            self.url + "?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2"
        )
        try:
            conn = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError:
            return False
        with contextlib.suppress(pika.exceptions.AMQPError):
            conn.close()
        return True

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            self.log.append(chunk.decode(errors="replace"))

    def stop(self) -> None:
        """Stop the node (SIGTERM to its group, SIGKILL after 20 s), then epmd."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _end_group(proc, 20.0)
            drainer, self._drainer = self._drainer, None
            if drainer is not None:
                drainer.join(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()

    def stop_all(self) -> None:
        """Stop the node and its private epmd."""
        try:
            self.stop()
        finally:
            epmd, self.epmd_proc = self.epmd_proc, None
            if epmd is not None:
                _end_group(epmd, 5.0)


def _end_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # erl's helpers (erl_child_setup, inet_gethost) share the group: none may outlive it
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _first_file(*paths: str) -> str | None:
    return next((p for p in paths if os.path.isfile(p)), None)


def start_rabbitmq() -> RabbitServer:
    """Start an independent rabbitmq-server; skip or fail (CI=true) when it is not installed."""
    # Not the rabbitmq-server on PATH: Debian's is a wrapper that switches to the rabbitmq
    # user and its system-wide directories; the script it runs takes our environment as is.
    script = _first_file(
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        *sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server")),
    )
    epmd = find_binary("epmd", "/usr/bin/epmd", "/usr/lib/erlang/erts-*/bin/epmd")
    if script is None or epmd is None:
        missing("rabbitmq-server (with Erlang's epmd)")
    server_boot = RabbitServer.start

    def boot(server: RabbitServer) -> None:
        try:
            server_boot(server)
        except BaseException:
            server.stop_all()
            raise

    return launch("spoolkit-rabbitmq-", partial(RabbitServer, script, epmd), boot)
