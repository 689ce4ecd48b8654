"""A script that puts records into a plain Spool (no handler) and ends without ``stop()``.

Usage: python tests/apps_exit/spool_and_end.py SPOOL SINK_URL COUNT EXIT_TIMEOUT

Puts ``{"n": 0}`` .. ``{"n": COUNT-1}`` into ``Spool(SPOOL, from_url(SINK_URL))``, prints
``PUT`` and ends normally.
"""

from __future__ import annotations

import sys

from spoolkit import Spool
from spoolkit.sinks import from_url


def main() -> None:
    """Start, put, end."""
    path, url, count, exit_timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    spool = Spool(path, from_url(url), serializer="json", exit_timeout=float(exit_timeout))
    spool.start()
    spool.put_many([{"n": i} for i in range(count)])
    print("PUT", flush=True)


if __name__ == "__main__":
    main()
