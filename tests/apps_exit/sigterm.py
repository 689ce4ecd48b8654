"""A service holding records in its spool when SIGTERM comes.

Usage: python tests/apps_exit/sigterm.py SPOOL SINK_URL COUNT INSTALL

Starts ``Spool(SPOOL, from_url(SINK_URL))`` whose one worker waits up to 600 s for a batch of
100,000 to fill, so the records put stay held; with INSTALL=1 it first calls
``spoolkit.exit_on_sigterm()``. Puts ``{"n": 0}`` .. ``{"n": COUNT-1}``, prints
``READY`` and sleeps until a signal ends it.
"""

from __future__ import annotations

import sys
import time

from spoolkit import Spool, exit_on_sigterm
from spoolkit.sinks import from_url


def main() -> None:
    """Put, then wait for SIGTERM."""
    path, url, count, install = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    if install:
        exit_on_sigterm()
    spool = Spool(
        path, from_url(url), serializer="json", workers=1, batch_size=100_000, batch_interval=600
    )
    spool.start()
    spool.put_many([{"n": i} for i in range(count)])
    print("READY", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
