"""Fixtures that start throwaway RabbitMQ and NATS servers on loopback ports (issue 20).

Both servers are real (``rabbitmq-server`` with its own epmd, ``nats-server -js``), started in
private temp directories on free 127.0.0.1 ports, as the unprivileged ``spoolkit-test`` user
when the suite runs as root, and stopped at the end. A missing binary skips the tests that
need it, or fails them when ``CI=true``.

- ``rabbitmq_server``: one node for the session (it takes seconds to boot). Tests that
  restart it leave it running again.
- ``nats_server``: one ``nats-server -js`` for the session.
- ``nats_server_factory``: start extra, independent NATS servers (for tests that stop one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.services._common import destroy, running, server_factory
from tests.services.nats_server import NatsServer, start_nats
from tests.services.rabbitmq_server import RabbitServer, start_rabbitmq

__all__ = ["nats_server", "nats_server_factory", "rabbitmq_server"]


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitServer]:
    """A RabbitMQ node shared by the session (user ``spool``, vhost ``/``)."""
    server = start_rabbitmq()
    try:
        yield server
    finally:
        try:
            server.stop_all()
        finally:
            destroy(server)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A ``nats-server -js`` shared by the session."""
    with running(start_nats) as server:
        yield server


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[[], NatsServer]]:
    """Start independent NATS servers; all are stopped after the test."""
    with server_factory(start_nats) as start:
        yield start
