"""What the service helpers share: free ports, an unprivileged user, finding binaries."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol, TypeVar

import pytest

TEST_USER = "spoolkit-test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(what: str) -> NoReturn:
    """Skip (or, under CI=true, fail) because a server binary is not installed."""
    reason = (
        f"{what} is not installed; run `make services` (scripts/ensure-services.sh) "
        "or install it with apt-get"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str, *extra_globs: str) -> str | None:
    """``name`` on PATH, else the newest match of ``extra_globs``; None when absent."""
    found = shutil.which(name)
    if found:
        return found
    matches = sorted(
        (m for pattern in extra_globs for m in glob.glob(pattern)), key=_version_key, reverse=True
    )
    return matches[0] if matches else None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in Path(path).parts if p.isdigit())


@dataclass(frozen=True)
class RunAs:
    """How to run a server: as ourselves, or (when we are root) as an unprivileged user."""

    prefix: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None

    def own(self, path: Path) -> None:
        """Give ``path`` to the user the server runs as."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]


def run_as() -> RunAs:
    """Run servers as ``spoolkit-test`` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return RunAs()
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=False,
            capture_output=True,
        )
        entry = pwd.getpwnam(TEST_USER)  # KeyError here: useradd failed, say so loudly
    prefix = (
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--clear-groups",
        "--",
    )
    return RunAs(prefix, entry.pw_uid, entry.pw_gid)


def make_base_dir(prefix: str, user: RunAs) -> Path:
    """A fresh private directory the server user owns (under /tmp when we are root, so the
    unprivileged user can reach it: pytest's own temp tree is root-only)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if user.uid is not None else None))
    user.own(base)
    return base


def remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


class Server(Protocol):
    """What the helpers below need of a server: its directory and a way to stop it."""

    base: Path

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


_PORT_TAKEN = ("eaddrinuse", "address already in use")


def launch(prefix: str, make: Callable[[Path, RunAs], S], boot: Callable[[S], None]) -> S:
    """``make`` a server in a fresh directory and ``boot`` it; the directory goes if that fails.

    A free port can be taken by another process between :func:`free_port` and the server's
    bind (an outgoing connection's ephemeral port): a boot that fails for that reason is tried
    again, up to three times, with a new server on new ports.
    """
    user = run_as()
    for attempt in range(3):
        server = make(make_base_dir(prefix, user), user)
        try:
            boot(server)
        except Exception as exc:
            remove_tree(server.base)
            if attempt == 2 or not any(w in str(exc).lower() for w in _PORT_TAKEN):
                raise
        except BaseException:
            remove_tree(server.base)
            raise
        else:
            return server
    raise AssertionError("unreachable")


def destroy(server: Server) -> None:
    """Stop the server (if running) and delete its directory."""
    try:
        server.stop()
    finally:
        remove_tree(server.base)


@contextmanager
def running(start: Callable[[], S]) -> Iterator[S]:
    """A server from ``start()``, destroyed on leaving."""
    server = start()
    try:
        yield server
    finally:
        destroy(server)


@contextmanager
def server_factory(start: Callable[[], S]) -> Iterator[Callable[[], S]]:
    """A ``start`` that remembers its servers; all are destroyed on leaving."""
    started: list[S] = []

    def start_one() -> S:
        server = start()
        started.append(server)
        return server

    try:
        yield start_one
    finally:
        for server in started:
            destroy(server)
