"""A process on a shared spool, driven by the lanes tests over stdin/stdout.

Usage: python tests/apps_exit/lane_child.py SPOOL SINK_FILE MODE COUNT PREFIX [EXIT_TIMEOUT]

Opens ``Spool(SPOOL, sink)`` and puts ``PREFIX-0`` .. ``PREFIX-<COUNT-1>``, then prints
``READY <own lane>`` and obeys one command per stdin line:

- ``stop``: ``spool.stop()`` (delivering what it can), then exit;
- ``exit``: exit normally without ``stop()`` (the exit hook stops the spool);
- ``list``: print ``DEAD <json [[id, item], ...]>`` of ``spool.dead_letters.list()``.

MODE:

- ``consume``: the spool is started. The sink appends one line ``<id> <item>`` per record to
  SINK_FILE, one write per batch, and raises TransientError while ``SINK_FILE.down`` exists.
- ``hold``: the spool is never started: the records wait in its lane.
- ``dead``: started, with a sink raising PermanentError: each batch is dead-lettered; ``flush``
  before READY.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from spoolkit import Record, Spool
from spoolkit.errors import PermanentError, TransientError


class FileSink:
    """Appends ``<id> <item>`` lines to a file; down while ``<file>.down`` exists."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, batch: Sequence[Record]) -> None:
        """Append the batch (one write), or raise TransientError while down."""
        if os.path.exists(self.path + ".down"):
            raise TransientError("the test took the sink down")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(f"{r.id} {r.item}\n" for r in batch).encode())
        finally:
            os.close(fd)


def refuse(batch: Sequence[Record]) -> None:
    """A sink that refuses every record for good."""
    raise PermanentError("the test refuses these records")


def main() -> None:
    """Put, report, obey."""
    path, sink_file, mode, count, prefix = sys.argv[1:6]
    exit_timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
    sink = refuse if mode == "dead" else FileSink(sink_file)
    spool = Spool(path, sink, workers=1, batch_interval=0, exit_timeout=exit_timeout)
    if mode != "hold":
        spool.start()
    spool.put_many([f"{prefix}-{i}" for i in range(int(count))])
    if mode == "dead":
        assert spool.flush(60)
    print("READY", spool.lanes_held()[0], flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stop":
            spool.stop(timeout=60)
            return
        if command == "exit":
            return
        if command == "list":
            letters = [[d.id, d.record.item] for d in spool.dead_letters.list()]
            print("DEAD", json.dumps(letters), flush=True)


if __name__ == "__main__":
    main()
