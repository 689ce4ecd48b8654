"""Fixtures that start a throwaway rsyslog on a loopback port (issue 20).

- ``rsyslog_server``: one rsyslogd for the session (``imtcp`` on a free 127.0.0.1 port, every
  message written as JSON to a file in its temp directory; see tests/services/rsyslog_server.py).
- ``rsyslog_server_factory``: start extra, independent rsyslogds (for tests that stop or
  restart one); each is destroyed when the test ends.

A missing rsyslogd skips the tests that need it, or fails them when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.services._common import running, server_factory
from tests.services.rsyslog_server import RsyslogServer, start_rsyslog

__all__ = ["rsyslog_server", "rsyslog_server_factory"]


@pytest.fixture(scope="session")
def rsyslog_server() -> Iterator[RsyslogServer]:
    """An rsyslogd shared by the session; tests tell their messages apart by content."""
    with running(start_rsyslog) as server:
        yield server


@pytest.fixture
def rsyslog_server_factory() -> Iterator[Callable[[], RsyslogServer]]:
    """Start independent rsyslogds; all are destroyed after the test."""
    with server_factory(start_rsyslog) as start:
        yield start
