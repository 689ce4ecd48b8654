"""Fixtures that start throwaway PostgreSQL and Redis servers on loopback ports.

The servers are real (``initdb`` + ``pg_ctl``, ``redis-server``), started in private temp
directories on free 127.0.0.1 ports, run as the unprivileged ``spoolkit-test`` user when the
suite runs as root, and stopped at the end. A missing binary skips the tests that need it, or
fails them when ``CI=true`` (``make services`` installs both).

- ``postgres_server`` / ``postgres_dsn``: one cluster for the session.
- ``redis_server`` / ``redis_url``: one redis-server for the session.
- ``postgres_server_factory`` / ``redis_server_factory``: start extra, independent servers
  (for tests that stop or restart one); each is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.services._common import running, server_factory
from tests.services.postgres_server import PostgresServer, start_postgres
from tests.services.redis_server import RedisServer, start_redis

__all__ = [
    "postgres_dsn",
    "postgres_server",
    "postgres_server_factory",
    "redis_server",
    "redis_server_factory",
    "redis_url",
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster shared by the session (superuser ``postgres``, trust auth)."""
    with running(start_postgres) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of the session's cluster."""
    return postgres_server.dsn


@pytest.fixture
def postgres_server_factory() -> Iterator[Callable[[], PostgresServer]]:
    """Start independent clusters (each a fresh initdb); all are destroyed after the test."""
    with server_factory(start_postgres) as start:
        yield start


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session (no persistence)."""
    with running(start_redis) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start independent redis-servers; all are stopped after the test."""
    with server_factory(start_redis) as start:
        yield start
