"""Child process for the kill -9 tests: puts and consumes until it is killed.

Usage: python -m tests._queue_child PATH FIRST_VALUE PROCESSED_LOG FSYNC

Writes ``P <n>`` to stdout once ``put`` of item n has returned, and ``A <n>`` once the ack of
item n has returned; appends each item to PROCESSED_LOG before acknowledging it.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading

from spoolkit import Queue


def item(n: int) -> str:
    """The payload for number n, self-checking."""
    return f"{n}:{hashlib.sha256(str(n).encode()).hexdigest()[:16]}" + "x" * (n % 300)


def main() -> None:
    path, first, log, fsync = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    q = Queue(path, chunksize=16, fsync=fsync)
    out = sys.stdout.fileno()
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(first)

    def consume() -> None:
        while True:
            batch = q.get_batch(rng.randint(1, 40))
            os.write(logfd, "".join(f"{d.item}\n" for d in batch).encode())
            q.ack(*batch)
            os.write(out, "".join(f"A {d.item.split(':')[0]}\n" for d in batch).encode())

    threading.Thread(target=consume, daemon=True).start()
    n = first
    while True:
        if rng.random() < 0.2:
            k = rng.randint(2, 30)
            q.put_many([item(i) for i in range(n, n + k)])
        else:
            k = 1
            q.put(item(n))
        os.write(out, "".join(f"P {i}\n" for i in range(n, n + k)).encode())
        n += k


if __name__ == "__main__":
    main()
