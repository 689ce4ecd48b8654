"""The crash-loop harness behind :mod:`spoolkit.torture`: children killed with ``kill -9``,
their ledgers, and the load test."""
