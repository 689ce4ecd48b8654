"""spoolkit: a durable, disk-backed buffer for logging and ETL."""

from __future__ import annotations

from queue import Empty, Full

from spoolkit._queue import Delivery, Queue
from spoolkit.typing import Record, Serializer, Sink

__version__ = "0.1.0"

__all__ = [
    "Delivery",
    "Empty",
    "Full",
    "Queue",
    "Record",
    "Serializer",
    "Sink",
    "__version__",
]
