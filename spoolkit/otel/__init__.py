"""Durable OpenTelemetry exporters: a disk spool between the SDK's batch processor and an
exporter, so a collector outage or a kill -9 loses nothing the exporter accepted.

```python
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from spoolkit.otel import DurableSpanExporter

exporter = DurableSpanExporter(OTLPSpanExporter(timeout=5), "/var/spool/app/traces")
provider.add_span_processor(BatchSpanProcessor(exporter))
```

Needs the ``otel`` extra (``pip install 'spoolkit[otel]'``): importing this package imports the
OpenTelemetry SDK and the OTLP protobuf encoder. See the OpenTelemetry page of the docs.
"""

from __future__ import annotations

try:
    from spoolkit.otel._exporters import (
        DurableLogExporter,
        DurableSpanExporter,
        default_retry,
        durable,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "spoolkit.otel needs the OpenTelemetry SDK and OTLP encoder: pip install 'spoolkit[otel]'"
    ) from exc

__all__ = ["DurableLogExporter", "DurableSpanExporter", "default_retry", "durable"]
