"""A script interrupted by Ctrl-C inside ``with Spool(...)`` while its sink hangs.

Usage: python tests/apps_exit/ctrl_c_drain.py SPOOL COUNT

Puts ``0`` .. ``COUNT-1`` into a one-worker Spool whose sink never returns, prints ``READY``
once the sink holds the first record, and waits for SIGINT in the main thread.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

from spoolkit import Spool


def main() -> None:
    """Put, wait for the sink to hang, wait for Ctrl-C."""
    path, count = sys.argv[1], int(sys.argv[2])
    entered = threading.Event()
    never = threading.Event()

    def hang(batch: Sequence[Any]) -> None:
        entered.set()
        never.wait()

    with Spool(path, hang, workers=1, batch_size=1, batch_interval=0) as spool:
        spool.put_many(range(count))
        entered.wait()
        print("READY", flush=True)
        threading.Event().wait()  # a blocking wait that SIGINT interrupts


if __name__ == "__main__":
    main()
