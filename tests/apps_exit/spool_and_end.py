"""A script that puts records into a plain Spool (no handler) and ends without ``stop()``.

Usage: python tests/apps_exit/spool_and_end.py SPOOL SINK_URL COUNT EXIT_TIMEOUT [disk]

Puts ``{"n": 0}`` .. ``{"n": COUNT-1}`` into ``Spool(SPOOL, from_url(SINK_URL))`` (with
``disk``: on ``backend=DiskBackend(SPOOL)`` rather than the default lanes), prints ``PUT`` and
ends normally.
"""

from __future__ import annotations

import sys

from spoolkit import Spool
from spoolkit.backends import DiskBackend
from spoolkit.sinks import from_url


def main() -> None:
    """Start, put, end."""
    path, url, count, exit_timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    disk = sys.argv[5:] == ["disk"]
    backend = DiskBackend(path, serializer="json") if disk else None
    spool = Spool(
        path, from_url(url), serializer="json", exit_timeout=float(exit_timeout), backend=backend
    )
    spool.start()
    spool.put_many([{"n": i} for i in range(count)])
    print("PUT", flush=True)


if __name__ == "__main__":
    main()
