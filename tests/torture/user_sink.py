"""A user-style sink for the crash-loop helper: JSON Lines, one line per record, fsynced.

Built in the child process by ``check_sink_under_crash_loop("tests.torture.user_sink:build")``.
"""

from __future__ import annotations

import os

from spoolkit.sinks import JsonlSink


def build(sink_dir: str) -> JsonlSink:
    """The sink: ``out.jsonl`` in the directory the helper keeps across kills."""
    return JsonlSink(os.path.join(sink_dir, "out.jsonl"))


class LosingSink:
    """A broken sink: returns without writing every third batch (acknowledged, yet gone)."""

    def __init__(self, sink_dir: str) -> None:
        self.inner = build(sink_dir)
        self.calls = 0

    def write(self, batch: object) -> None:
        """Write, except every third call."""
        self.calls += 1
        if self.calls % 3:
            self.inner.write(batch)  # type: ignore[arg-type]


def build_losing(sink_dir: str) -> LosingSink:
    """The broken sink."""
    return LosingSink(sink_dir)
