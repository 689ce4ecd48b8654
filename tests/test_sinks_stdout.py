"""StdoutSink: NDJSON lines on standard output."""

from __future__ import annotations

import io
import json
import threading

import pytest

from spoolkit.errors import PartialFailure, TransientError
from spoolkit.sinks import StdoutSink
from spoolkit.typing import Record


def test_writes_one_flushed_json_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    """Each record is one {id, enqueued_at, item} line on the current sys.stdout."""
    StdoutSink().write([Record("a", {"x": 1}, 2.5), Record("b", [1, "two"], 3.0)])
    out = capsys.readouterr().out
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": "a", "enqueued_at": 2.5, "item": {"x": 1}},
        {"id": "b", "enqueued_at": 3.0, "item": [1, "two"]},
    ]


def test_concurrent_batches_do_not_interleave() -> None:
    """Batches written from several threads stay whole lines on the stream."""
    stream = io.StringIO()
    sink = StdoutSink(stream=stream)

    def work(k: int) -> None:
        for j in range(20):
            sink.write([Record(f"{k}-{j}-{i}", "y" * 500, 1.0) for i in range(5)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [json.loads(line)["id"] for line in stream.getvalue().splitlines()]
    assert len(ids) == len(set(ids)) == 6 * 20 * 5


def test_closed_stream_is_transient() -> None:
    """A stream that cannot be written raises TransientError."""
    stream = io.StringIO()
    stream.close()
    with pytest.raises(TransientError, match="stdout"):
        StdoutSink(stream=stream).write([Record("a", 1, 1.0)])


def test_unencodable_item_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    """A record JSON cannot encode is named in PartialFailure; the rest are printed."""
    with pytest.raises(PartialFailure) as info:
        StdoutSink().write([Record("ok", 1, 1.0), Record("bad", {1, 2}, 1.0)])
    assert info.value.failed == ["bad"]
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["ok"]
