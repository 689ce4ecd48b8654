"""spoolkit: a durable, disk-backed buffer for logging and ETL."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
