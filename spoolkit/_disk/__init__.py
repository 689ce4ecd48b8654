"""The on-disk engine behind :class:`spoolkit.Queue` (private; see docs/format.md)."""
