"""Ctrl-C in ``with Spool(...)`` with a slow sink: a real child process gets SIGINT twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from spoolkit import Spool
from spoolkit.testing import MemorySink

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "apps_exit" / "ctrl_c_drain.py"
DEADLINE = 60.0  # interpreter start and the child's work, on a busy machine


class Lines:
    """Collects the lines of a child's stream from a thread; tests wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = DEADLINE) -> bool:
        """Wait until a line containing ``text`` arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: any(text in x for x in self.lines), timeout)

    def text(self) -> str:
        """Everything read (call after the stream ended)."""
        self._thread.join(DEADLINE)
        return "".join(self.lines)


def test_second_ctrl_c_stops_the_drain_quietly_and_keeps_the_records(tmp_path: Path) -> None:
    """The first Ctrl-C says it drains and how to stop; the second stops at once with one
    traceback (the first Ctrl-C's), and every record is still on disk."""
    path = tmp_path / "spool"
    with subprocess.Popen(
        [sys.executable, str(APP), str(path), "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        out, err = Lines(child.stdout), Lines(child.stderr)  # type: ignore[arg-type]
        try:
            assert out.wait_for("READY"), err.text()
            child.send_signal(signal.SIGINT)
            assert err.wait_for("Ctrl-C again"), err.text()
            child.send_signal(signal.SIGINT)
            child.wait(DEADLINE)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr = err.text()
        out.text()
    assert "draining up to 30 s; Ctrl-C again to stop now, nothing is lost" in stderr
    assert "spool_stopped_now" in stderr
    assert stderr.count("Traceback") == 1, stderr  # the first Ctrl-C's, as without spoolkit
    assert "During handling of the above exception" not in stderr
    assert "KeyboardInterrupt" in stderr
    sink = MemorySink()
    with Spool(path, sink) as again:
        assert again.flush(30)
    assert sorted(sink.items) == list(range(20))
