"""The file and stdout sinks write a record holding a lone surrogate (which a JSON spool keeps,
as a ``surrogateescape``'d file name) as its JSON ``\\uXXXX`` escape, not failing its batch."""

from __future__ import annotations

import io
import json
from pathlib import Path

from spoolkit import Record
from spoolkit.sinks import JsonlSink, StdoutSink

NAME = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # "caf\udce9.txt"


def _batch() -> list[Record]:
    return [Record("u-1", {"file": NAME}, 0.0), Record("u-2", {"file": "plain"}, 0.0)]


def test_jsonl_sink_writes_a_surrogate_as_its_json_escape(tmp_path: Path) -> None:
    """Both records of the batch are written; the line decodes back to the same str."""
    sink = JsonlSink(str(tmp_path / "out.jsonl"))
    try:
        sink.write(_batch())
    finally:
        sink.close()
    raw = (tmp_path / "out.jsonl").read_bytes()
    assert b"\\udce9" in raw
    lines = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [line["item"]["file"] for line in lines] == [NAME, "plain"]


def test_stdout_sink_writes_a_surrogate_to_a_strict_utf8_stream() -> None:
    """A strict UTF-8 text stream (a pipe's usual stdout) gets both records, the escape intact."""
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict")
    StdoutSink(stream=stream).write(_batch())
    lines = [json.loads(line) for line in buffer.getvalue().decode("utf-8").splitlines()]
    assert [line["item"]["file"] for line in lines] == [NAME, "plain"]
