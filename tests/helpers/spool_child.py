"""Child process for the Spool kill -9 tests: puts records and delivers them until killed.

Usage: python -m tests.helpers.spool_child SPOOL_PATH SINK_LOG FIRST_NUMBER

Prints ``P <n>`` on stdout once ``put`` of number n has returned. The sink appends one line per
batch to SINK_LOG before returning: ``B <worker thread> <record id>=<n> ...``.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections.abc import Sequence

from spoolkit import Record, Spool


class LogSink:
    """Appends each batch as one line (one write) to a file, then returns."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, batch: Sequence[Record]) -> None:
        """Write the batch line."""
        worker = threading.current_thread().name
        line = " ".join(["B", worker, *(f"{r.id}={r.item}" for r in batch)]) + "\n"
        os.write(self.fd, line.encode())

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


def main() -> None:
    """Put numbers from FIRST_NUMBER on, forever."""
    path, log, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(first)
    spool = Spool(path, LogSink(log), workers=2, batch_size=rng.randint(1, 50), batch_interval=0)
    spool.start()
    out = sys.stdout.fileno()
    n = first
    while True:
        k = rng.randint(2, 20) if rng.random() < 0.2 else 1
        if k == 1:
            spool.put(n)
        else:
            spool.put_many(range(n, n + k))
        os.write(out, "".join(f"P {i}\n" for i in range(n, n + k)).encode())
        n += k


if __name__ == "__main__":
    main()
