"""Child process for the Redis backend kill -9 test: a Spool consuming a shared stream.

Usage: python -m tests._redis_child BACKEND_URL SPOOL_PATH SINK_LOG HANG_AFTER

The sink appends one line per batch to SINK_LOG before returning: ``B <item> <item> ...``.
With HANG_AFTER >= 0, the batch after that many batches is logged as ``H <item> ...`` and the
sink then never returns, so the parent can kill the process in the middle of a batch.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

from spoolkit import Record, Spool


class LogSink:
    """Logs each batch as one line (one write); optionally hangs on one batch."""

    def __init__(self, path: str, hang_after: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.hang_after = hang_after
        self.batches = 0

    def write(self, batch: Sequence[Record]) -> None:
        """Log the batch; hang forever on batch number ``hang_after``."""
        items = " ".join(str(r.item) for r in batch)
        if self.batches == self.hang_after:
            os.write(self.fd, f"H {items}\n".encode())
            threading.Event().wait()  # mid-batch until SIGKILL
        self.batches += 1
        os.write(self.fd, f"B {items}\n".encode())


def main() -> None:
    """Consume until killed (or until stdin closes)."""
    url, path, log, hang_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    spool = Spool(
        path, LogSink(log, hang_after), backend=url, workers=1, batch_size=20, batch_interval=0
    )
    spool.start()
    sys.stdin.read()  # the parent closes stdin to stop a survivor cleanly
    spool.stop(drain=False, timeout=5)


if __name__ == "__main__":
    main()
