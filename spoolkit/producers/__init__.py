"""Producers: ways to get records into a spool without calling ``put`` by hand.

* :class:`SpoolHandler`: a stdlib ``logging.Handler``.
* :class:`SpoolProcessor`: a structlog processor.

Both are re-exported from :mod:`spoolkit`.
"""

from __future__ import annotations

from spoolkit.producers.logging_handler import SpoolHandler
from spoolkit.producers.structlog import SpoolProcessor

__all__ = ["SpoolHandler", "SpoolProcessor"]
