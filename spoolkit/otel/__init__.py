"""Durable OpenTelemetry exporters: a disk spool between the SDK's batch processor and an
exporter, so a collector outage or a kill -9 loses nothing the exporter accepted.

```python
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from spoolkit.otel import DurableSpanExporter

exporter = DurableSpanExporter(OTLPSpanExporter(timeout=5), "/var/spool/app/traces")
provider.add_span_processor(BatchSpanProcessor(exporter))
```

Needs the ``otel`` extra (``pip install 'spoolkit[otel]'``): the first use of a name of this
package imports the OpenTelemetry SDK and the OTLP protobuf encoder. See the OpenTelemetry page
of the docs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spoolkit.otel._exporters import (
        DurableLogExporter,
        DurableSpanExporter,
        default_retry,
        durable,
    )

__all__ = ["DurableLogExporter", "DurableSpanExporter", "default_retry", "durable"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that spoolkit.otel._values (all OtlpLogSink needs, with
    # opentelemetry-proto only) imports without the SDK.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module("spoolkit.otel._exporters")
    except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
        raise ImportError(
            "spoolkit.otel needs the OpenTelemetry SDK and OTLP encoder: "
            "pip install 'spoolkit[otel]'"
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
