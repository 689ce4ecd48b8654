"""Export :meth:`spoolkit.Spool.stats` to Prometheus (extra ``spoolkit[prometheus]``).

```python
from spoolkit.prometheus import SpoolCollector
SpoolCollector(spool).register()          # into prometheus_client's default REGISTRY
```

``prometheus_client`` is imported when this module is, never by ``import spoolkit``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "spoolkit.prometheus needs prometheus_client: pip install 'spoolkit[prometheus]'"
    ) from exc

from spoolkit.spool.facade import Spool

__all__ = ["SpoolCollector"]

_COUNTERS = {
    "enqueued": "Records put into the spool.",
    "delivered": "Records the sink or a deferred function took.",
    "retried": "Record attempts beyond the first.",
    "dead_lettered": "Records moved to the dead letters.",
    "dropped": "Records discarded because the spool was full.",
    "worker_restarts": "Workers restarted after a crash or a stuck sink call.",
    "undecodable": "Stored records skipped because they could not be decoded (or authenticated).",
    "stuck_calls": "Sink calls abandoned after running past sink_timeout.",
}
_GAUGES = {
    "backlog": "Records not yet acknowledged (waiting or in flight).",
    "bytes_on_disk": "Bytes the spool and its dead letters take on disk.",
    "oldest_age": "Seconds since the oldest undelivered record was put.",
    "stuck_threads": "Threads inside a sink call past sink_timeout now.",
    "lost_records": "Records found lost (written and gone) when the spool's lanes were opened.",
}


class SpoolCollector:
    """A ``prometheus_client`` collector reading one spool's :meth:`~spoolkit.Spool.stats`.

    Metrics are named ``<namespace>_<stat>`` (counters end in ``_total``) and carry the label
    ``spool`` (the spool's path, or ``name`` when given).

    Args:
        spool: the spool to export.
        namespace: the metric name prefix.
        name: the ``spool`` label value; default the spool path.
    """

    def __init__(self, spool: Spool, *, namespace: str = "spoolkit", name: str | None = None):
        self.spool = spool
        self.namespace = namespace
        self.label = name if name is not None else spool.path

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by ``prometheus_client`` on each scrape)."""
        stats = self.spool.stats()
        for key, doc in _COUNTERS.items():
            fam = CounterMetricFamily(f"{self.namespace}_{key}", doc, labels=["spool"])
            fam.add_metric([self.label], getattr(stats, key))
            yield fam
        for key, doc in _GAUGES.items():
            unit_key = f"{key}_seconds" if key == "oldest_age" else key
            gauge = GaugeMetricFamily(f"{self.namespace}_{unit_key}", doc, labels=["spool"])
            gauge.add_metric([self.label], getattr(stats, key))
            yield gauge

    def register(self, registry: Any = None) -> SpoolCollector:
        """Register with ``registry`` (default ``prometheus_client.REGISTRY``); return self."""
        (registry if registry is not None else REGISTRY).register(self)
        return self
