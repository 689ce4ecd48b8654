"""Sinks: where a spool delivers its records.

```python
from spoolkit import Spool
from spoolkit.sinks import from_url

with Spool("/var/spool/app", from_url("https://logs.example.com/ingest?format=ndjson")) as spool:
    spool.put({"event": "signup", "user": 42})
```

Importing this package loads no optional dependency: ``HttpSink`` and ``AsyncHttpSink``
(httpx), ``PostgresSink`` (psycopg), ``RedisStreamSink`` (redis), ``OtlpLogSink``
(opentelemetry-proto and httpx), ``AmqpSink`` (pika) and ``NatsSink`` (nats-py) import their
driver the first time they are used, and raise ``ImportError`` naming the extra to install when
it is missing. ``SyslogSink`` needs only the standard library (it is loaded on first use too,
with ``ssl``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spoolkit.sinks._url import from_url
from spoolkit.sinks.jsonl import JsonlSink
from spoolkit.sinks.stdout import StdoutSink

if TYPE_CHECKING:
    from spoolkit.sinks.amqp import AmqpSink
    from spoolkit.sinks.http import HttpSink
    from spoolkit.sinks.http_async import AsyncHttpSink
    from spoolkit.sinks.nats import NatsSink
    from spoolkit.sinks.otlp import OtlpLogSink
    from spoolkit.sinks.postgres import PostgresSink
    from spoolkit.sinks.redis import RedisStreamSink
    from spoolkit.sinks.syslog import SyslogSink

__all__ = [
    "AmqpSink",
    "AsyncHttpSink",
    "HttpSink",
    "JsonlSink",
    "NatsSink",
    "OtlpLogSink",
    "PostgresSink",
    "RedisStreamSink",
    "StdoutSink",
    "SyslogSink",
    "from_url",
]

# Sinks whose module imports an optional driver: loaded on first attribute access.
_LAZY = {
    "AmqpSink": "spoolkit.sinks.amqp",
    "NatsSink": "spoolkit.sinks.nats",
    "AsyncHttpSink": "spoolkit.sinks.http_async",
    "HttpSink": "spoolkit.sinks.http",
    "OtlpLogSink": "spoolkit.sinks.otlp",
    "PostgresSink": "spoolkit.sinks.postgres",
    "RedisStreamSink": "spoolkit.sinks.redis",
    "SyslogSink": "spoolkit.sinks.syslog",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
