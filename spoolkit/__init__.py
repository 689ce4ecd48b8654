"""spoolkit: a durable, disk-backed buffer for logging and ETL."""

from __future__ import annotations

from queue import Empty, Full

from spoolkit._internal import platform as _platform  # noqa: F401 - first: refuses a platform spoolkit can't run on
from spoolkit._version import __version__
from spoolkit.deadletter import DeadError, DeadLetter, DeadLetters
from spoolkit.producers import SpoolHandler, SpoolProcessor
from spoolkit.queue.facade import Delivery, Queue
from spoolkit.retry import RetryPolicy
from spoolkit.spool.current import current_record
from spoolkit.spool.deferred import DeferredFunction, DeferredHandle
from spoolkit.spool.facade import Spool
from spoolkit.spool.lifecycle import exit_on_sigterm
from spoolkit.spool.stats import SpoolStats
from spoolkit.typing import Record, Serializer, Sink

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
    "current_record",
    "exit_on_sigterm",
]
