"""A live process holding a lane of a spool, for the CLI and inspect tests.

Usage: python -m tests.helpers.lane_holder SPOOL MODE COUNT

Opens ``Spool(SPOOL, None, serializer="json")``, puts ``{"pid": <its pid>, "n": i}`` for i in
0..COUNT-1, prints ``READY <its lane>`` and then obeys one command per stdin line:
``put K`` puts K more (numbered on) and prints ``PUT``; ``exit`` (or the end of stdin) exits
normally.

MODE:

- ``hold``: ``consume=True``, never started: the lane is held and nothing of it is delivered
  (a consuming process that is busy, or whose sink is down).
- ``produce``: ``consume=False``, a producer-only process (a web worker): it hands its lane to
  a consuming process whenever one runs (``spoolkit ship``), and writes to another.

Tests drive it with :func:`lane_holder`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spoolkit import Spool

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0  # a child's start and answers on a busy 2-core machine


class Holder:
    """A running ``lane_holder`` child: its process and the lane it holds."""

    def __init__(self, path: Path, mode: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.lane_holder", str(path), mode, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self.lane = self._line("READY")

    def _line(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the child answers or dies: EOF
        said, _, rest = line.partition(" ")
        assert said == word, f"lane holder said {line!r}, exit code {self.proc.poll()}"
        return rest

    def put(self, k: int) -> None:
        """Have it put ``k`` more records."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"put {k}\n")
        self.proc.stdin.flush()
        self._line("PUT")

    def exit(self) -> None:
        """Have it exit normally; it must exit 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        assert self.proc.wait(DEADLINE) == 0

    def kill(self) -> None:
        """kill -9 (if still running) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(DEADLINE)


@contextmanager
def lane_holder(path: Path, mode: str = "hold", count: int = 0) -> Iterator[Holder]:
    """A child holding a lane of the spool at ``path`` (see the module docstring); killed
    on leaving if it still runs."""
    holder = Holder(path, mode, count)
    try:
        yield holder
    finally:
        holder.kill()
        for stream in (holder.proc.stdin, holder.proc.stdout):
            if stream is not None:
                stream.close()


def main() -> None:
    """Put, report, obey."""
    path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode not in ("hold", "produce"):
        raise SystemExit(f"unknown mode {mode!r}")
    spool = Spool(path, None, serializer="json", consume=mode == "hold")
    pid = os.getpid()
    spool.put_many([{"pid": pid, "n": i} for i in range(count)])
    print("READY", spool._backend.lanes_held()[0], flush=True)  # type: ignore[attr-defined]
    n = count
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "exit":
            return
        if word == "put":
            spool.put_many([{"pid": pid, "n": i} for i in range(n, n + int(arg))])
            n += int(arg)
            print("PUT", flush=True)


if __name__ == "__main__":
    main()
