"""Lone surrogates (a ``surrogateescape``d file name, ``"caf\\udce9"``) on JSON spools.

UTF-8 cannot hold a lone surrogate, so encoding such text used to raise and the record was
dropped (with a traceback on stderr). The JSON serializer and the handler's own JSON text now
store it as a ``\\udce9`` escape, which decodes to the same ``str``. Checked on the generic
serializer (hypothesis), a ``Spool`` reopened from disk, ``SpoolHandler`` and structlog's
``SpoolProcessor``.
"""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from spoolkit import Queue, Record, Spool, SpoolHandler, SpoolProcessor
from spoolkit.serializers import JsonSerializer
from spoolkit.testing import MemorySink

NAME = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # "caf\udce9.txt", a Latin-1 name

_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet=st.characters(exclude_categories=()) | st.integers(0xDC80, 0xDCFF).map(chr))
)
_json = st.recursive(
    _json_scalar, lambda v: st.lists(v) | st.dictionaries(st.text(alphabet="ab\udce9"), v)
)


def _as_json_reads_it(value: object) -> object:
    """``value`` as a JSON decoder reads it back: surrogate pairs written as two escapes are
    joined into the character they encode; all else, lone surrogates included, stays."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_as_json_reads_it(v) for v in value]
    if isinstance(value, dict):
        return {_as_json_reads_it(k): _as_json_reads_it(v) for k, v in value.items()}
    return value


@given(value=_json)
def test_json_serializer_stores_lone_surrogates_escaped_and_loads_them_back(
    value: object,
) -> None:
    """Any JSON value with surrogates: dumps gives valid UTF-8 that loads back to the value."""
    serializer = JsonSerializer()
    data = serializer.dumps(value)
    data.decode("utf-8")  # strict: valid UTF-8
    assert serializer.loads(data) == _as_json_reads_it(value)


def test_json_serializer_writes_the_escape_and_keeps_other_text_as_utf8() -> None:
    """Only the surrogate is escaped; other non-ASCII text stays UTF-8."""
    expected = '{"f":"caf\\udce9.txt","g":"é"}'.encode()
    assert JsonSerializer().dumps({"f": NAME, "g": "é"}) == expected


def test_a_json_queue_keeps_a_surrogate_across_reopening(tmp_path: Path) -> None:
    """Put on a JSON queue, closed, reopened: the item comes back with the same surrogate."""
    with Queue(tmp_path / "q", serializer="json") as q:
        q.put({"file": NAME})
    with Queue(tmp_path / "q", serializer="json") as q:
        assert q.get(timeout=5) == {"file": NAME}


def test_spool_handler_delivers_a_message_with_a_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SpoolHandler on a JSON spool: the record arrives with the surrogate, stderr stays clean."""
    sink = MemorySink()
    handler = SpoolHandler(
        tmp_path / "h", sink=sink, spool_options={"serializer": "json", "batch_interval": 0}
    )
    log = logging.getLogger("test_json_surrogates.handler")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.warning("cannot open %s", NAME, extra={"path": NAME})
        assert handler.spool.flush(30)
    finally:
        log.removeHandler(handler)
        handler.close()
    (record,) = sink.records
    assert record.item["message"] == f"cannot open {NAME}"
    assert record.item["extra"] == {"path": NAME}
    assert capsys.readouterr().err == ""


def test_structlog_processor_spools_an_event_with_a_surrogate(tmp_path: Path) -> None:
    """SpoolProcessor into a JSON spool: the event is spooled, no error counted."""
    sink = MemorySink()
    with Spool(tmp_path / "s", sink, serializer="json", batch_interval=0) as spool:
        processor = SpoolProcessor(spool)
        structlog.configure(
            processors=[processor, structlog.processors.JSONRenderer()],
            logger_factory=structlog.WriteLoggerFactory(file=io.StringIO()),
            cache_logger_on_first_use=False,
        )
        try:
            structlog.get_logger().info("cannot open", path=NAME)
        finally:
            structlog.reset_defaults()
        assert spool.flush(30)
    assert processor.errors == 0
    assert processor.last_error is None
    assert [r.item for r in sink.records] == [{"event": "cannot open", "path": NAME}]


@pytest.mark.services
def test_redis_sink_adds_a_record_with_a_surrogate_as_its_json_escape(redis_url: str) -> None:
    """RedisStreamSink: an item holding "caf\\udce9" is added with the rest of its batch."""
    import redis

    from spoolkit.sinks.redis import RedisStreamSink

    stream = f"sur-{uuid.uuid4().hex[:12]}"
    sink = RedisStreamSink(redis_url, stream)
    try:
        sink.write([Record("r0", {"file": NAME}, 1.0), Record("r1", {"n": 1}, 2.0)])
    finally:
        sink.close()
    client = redis.Redis.from_url(redis_url)
    try:
        items = [fields[b"item"] for _, fields in client.xrange(stream)]
    finally:
        client.close()
    assert [JsonSerializer().loads(i) for i in items] == [{"file": NAME}, {"n": 1}]


@pytest.mark.services
def test_postgres_sink_stores_a_surrogate_as_backslash_text(postgres_dsn: str) -> None:
    """PostgresSink: "caf\\udce9" (which PostgreSQL cannot store) is written as the text
    "caf\\\\udce9", in jsonb and in a text column, with the rest of its batch."""
    import psycopg
    from psycopg import sql

    from spoolkit.sinks.postgres import PostgresSink

    table = f"sur_{uuid.uuid4().hex[:12]}"
    batch = [Record("r0", {"file": NAME}, 1.0), Record("r1", {"file": "plain"}, 2.0)]
    default = PostgresSink(postgres_dsn, table, create_table=True)
    mapped = PostgresSink(postgres_dsn, f"{table}_t", to_row=lambda r: {"file": r.item["file"]})
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, file text)").format(
                sql.Identifier(f"{table}_t")
            )
        )
        try:
            default.write(batch)
            mapped.write(batch)
        finally:
            default.close()
            mapped.close()
        items = db.execute(
            sql.SQL("SELECT item FROM {} ORDER BY id").format(sql.Identifier(table))
        ).fetchall()
        files = db.execute(
            sql.SQL("SELECT file FROM {} ORDER BY id").format(sql.Identifier(f"{table}_t"))
        ).fetchall()
    shown = "caf\\udce9.txt"  # a backslash, then "udce9"
    assert items == [({"file": shown},), ({"file": "plain"},)]
    assert files == [(shown,), ("plain",)]
