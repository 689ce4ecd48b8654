"""StdoutSink: one JSON line per record on standard output."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit.errors import TransientError
from spoolkit.sinks._encode import ToJson, encode_batch
from spoolkit.typing import Record

__all__ = ["StdoutSink"]


class StdoutSink:
    """Write each record as one NDJSON line to ``sys.stdout`` (or another text stream).

    Each line is ``{"id": ..., "enqueued_at": ..., "item": ...}`` unless ``to_json`` says
    otherwise. A batch is written with one ``write`` call under a lock, then flushed, so lines
    from concurrent workers never interleave. Handy for piping a spool into ``jq`` or a log
    shipper, and for demos.

    Args:
        stream: where to write; ``sys.stdout`` as it is at each write when None (so test
            capture and redirection keep working).
        to_json: maps a record to a JSON-safe value.
    """

    def __init__(self, *, stream: TextIO | None = None, to_json: ToJson | None = None) -> None:
        self._stream = stream
        self._to_json = to_json
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a lock of its own."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "StdoutSink()" if self._stream is None else f"StdoutSink(stream={self._stream!r})"

    def write(self, batch: Sequence[Record]) -> None:
        """Write one line per record and flush.

        Raises:
            TransientError: the stream failed (for example a closed pipe).
            PermanentError: no record of the batch could be encoded as JSON.
            PartialFailure: some records could not be encoded; the others were written.
        """
        if not batch:
            return
        encoded = encode_batch(batch, self._to_json)
        encoded.raise_if_all_bad("stdout")
        # a lone surrogate (from a JSON spool) as its \uXXXX escape: any stream can encode it
        text = json_utf8("".join(line + "\n" for _, line in encoded.ok)).decode()
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError) as exc:
                raise TransientError(f"cannot write to stdout: {exc}", sink="stdout") from exc
        encoded.raise_if_some_bad("stdout")
