"""Shared fixtures. Service fixtures live in tests/services/: PostgreSQL and Redis in
fixtures.py, rsyslog in fixtures_syslog.py, RabbitMQ and NATS in fixtures_brokers.py."""

from __future__ import annotations

pytest_plugins = (
    "tests.services.fixtures",
    "tests.services.fixtures_syslog",
    "tests.services.fixtures_brokers",
)
