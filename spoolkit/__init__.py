"""spoolkit: a durable, disk-backed buffer for logging and ETL."""

from __future__ import annotations

from queue import Empty, Full

from spoolkit._deferred import DeferredFunction, DeferredHandle
from spoolkit._queue import Delivery, Queue
from spoolkit._spool import Spool
from spoolkit._stats import SpoolStats
from spoolkit.deadletter import DeadError, DeadLetter, DeadLetters
from spoolkit.producers import SpoolHandler, SpoolProcessor
from spoolkit.retry import RetryPolicy
from spoolkit.typing import Record, Serializer, Sink

__version__ = "0.1.0"

__all__ = [
    "DeadError",
    "DeadLetter",
    "DeadLetters",
    "DeferredFunction",
    "DeferredHandle",
    "Delivery",
    "Empty",
    "Full",
    "Queue",
    "Record",
    "RetryPolicy",
    "Serializer",
    "Sink",
    "Spool",
    "SpoolHandler",
    "SpoolProcessor",
    "SpoolStats",
    "__version__",
]
