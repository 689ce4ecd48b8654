"""The optional Prometheus collector."""

from __future__ import annotations

from typing import Any

import pytest

from spoolkit.testing import MemorySink
from tests.helpers import python_stdout, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)


def test_collector_exports_the_stats(make_spool: Any) -> None:
    """Every stat is exported under spoolkit_*, labelled with the spool."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from spoolkit.prometheus import SpoolCollector

    with make_spool(MemorySink()) as spool:
        spool.put_many(range(3))
        assert spool.flush(10)
        registry = prometheus_client.CollectorRegistry()
        SpoolCollector(spool, name="main").register(registry)
        text = prometheus_client.generate_latest(registry).decode()
    assert 'spoolkit_enqueued_total{spool="main"} 3.0' in text
    assert 'spoolkit_delivered_total{spool="main"} 3.0' in text
    for name in (
        "retried_total",
        "dead_lettered_total",
        "dropped_total",
        "worker_restarts_total",
        "undecodable_total",
        "stuck_calls_total",
        "backlog",
        "bytes_on_disk",
        "oldest_age_seconds",
        "stuck_threads",
        "lost_records",
    ):
        assert f"spoolkit_{name}{{" in text


def test_missing_prometheus_client_names_the_extra() -> None:
    """Without prometheus_client the import error says which extra to install."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "sys.modules['prometheus_client.core'] = None\n"
        "try:\n    import spoolkit.prometheus\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = python_stdout(code)
    assert "spoolkit[prometheus]" in out
