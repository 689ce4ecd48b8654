"""PostgresSink against a real PostgreSQL server started by the suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
import psycopg.errors
import pytest
from psycopg import sql

from spoolkit.errors import (
    ConfigError,
    PartialFailure,
    PermanentError,
    SinkError,
    TransientError,
)
from spoolkit.sinks import PostgresSink
from spoolkit.sinks.postgres import map_pg_error
from spoolkit.typing import Record
from tests.helpers import closing_factory, errors_in_threads
from tests.services._common import free_port
from tests.services.postgres_server import PostgresServer

pytestmark = pytest.mark.services


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"r{i}", {"n": i, "tags": ["a", "b"]}, 1700000000.25 + i)
        for i in range(start, start + n)
    ]


Conn = psycopg.Connection[Any]
MakeSink = Callable[..., PostgresSink]
Rows = Callable[[], list[tuple[Any, ...]]]


@pytest.fixture
def table() -> str:
    """A table name no other test uses."""
    return f"events_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(postgres_dsn: str) -> Iterator[Conn]:
    """An autocommit connection for setting up and checking tables."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def sink_factory() -> Iterator[MakeSink]:
    """Build PostgresSinks that are closed after the test."""
    with closing_factory(PostgresSink) as make:
        yield make


@pytest.fixture
def make_sink(postgres_dsn: str, table: str, sink_factory: MakeSink) -> MakeSink:
    """``make_sink(**options)``: a PostgresSink on the session's server and the test's table."""
    return lambda **options: sink_factory(postgres_dsn, table, **options)


@pytest.fixture
def make_table(db: Conn, table: str) -> Callable[..., None]:
    """``make_table("n int", ...)``: the test's table, ``id text PRIMARY KEY`` and those columns."""

    def make(*columns: LiteralString) -> None:
        body = ", ".join(["id text PRIMARY KEY", *columns])
        db.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(body)))

    return make


@pytest.fixture
def stored(db: Conn, table: str) -> Rows:
    """``stored()``: the rows of the test's table, ordered by id."""
    query = sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))
    return lambda: db.execute(query).fetchall()


def test_create_table_and_insert_default_rows(
    db: Conn, table: str, make_sink: MakeSink, stored: Rows
) -> None:
    """create_table makes (id, enqueued_at timestamptz, item jsonb) and rows land in it."""
    sink = make_sink(create_table=True)
    sink.write(records(2))
    assert stored() == [
        ("r0", datetime.fromtimestamp(1700000000.25, UTC), {"n": 0, "tags": ["a", "b"]}),
        ("r1", datetime.fromtimestamp(1700000001.25, UTC), {"n": 1, "tags": ["a", "b"]}),
    ]
    types = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        [table],
    ).fetchall()
    assert types == [
        ("id", "text"),
        ("enqueued_at", "timestamp with time zone"),
        ("item", "jsonb"),
    ]


def test_redelivery_leaves_no_duplicate_rows(make_sink: MakeSink, stored: Rows) -> None:
    """Writing the same ids again (whole or overlapping batches) adds only the new ids."""
    sink = make_sink(create_table=True)
    sink.write(records(3))
    sink.write(records(3))
    sink.write(records(4, start=1))
    sink.write([*records(1, start=9), *records(1, start=9)])  # a duplicate within one batch
    assert [r[0] for r in stored()] == ["r0", "r1", "r2", "r3", "r4", "r9"]


def test_to_row_maps_items_to_own_columns(
    make_table: Callable[..., None], make_sink: MakeSink, stored: Rows
) -> None:
    """to_row fills user columns (dicts as jsonb); the sink adds id; ON CONFLICT still holds."""
    make_table("n int", "label text", "extra jsonb")
    sink = make_sink(
        to_row=lambda r: {
            "n": r.item["n"],
            "label": f"#{r.item['n']}",
            "extra": {"t": r.item["tags"]},
        },
    )
    sink.write(records(2))
    sink.write(records(2))
    assert stored() == [
        ("r0", 0, "#0", {"t": ["a", "b"]}),
        ("r1", 1, "#1", {"t": ["a", "b"]}),
    ]


def test_columns_fix_the_column_list(
    make_table: Callable[..., None], make_sink: MakeSink, stored: Rows
) -> None:
    """With columns=, keys to_row leaves out insert NULL; unknown keys fail that record."""
    make_table("a int", "b int")

    def to_row(r: Record) -> dict[str, Any]:
        return {"a": r.item["n"], **({"zzz": 1} if r.id == "r2" else {})}

    sink = make_sink(to_row=to_row, columns=["a", "b"])
    with pytest.raises(PartialFailure) as info:
        sink.write(records(3))
    assert info.value.failed == ["r2"]
    assert "zzz" in str(info.value)
    assert stored() == [("r0", 0, None), ("r1", 1, None)]


def test_missing_table_is_permanent(make_sink: MakeSink) -> None:
    """Inserting into a table that does not exist raises PermanentError (UndefinedTable)."""
    sink = make_sink()
    with pytest.raises(PermanentError, match="42P01") as info:
        sink.write(records(1))
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    sink.write([])  # the pooled connection is still usable afterwards
    with pytest.raises(PermanentError):
        sink.write(records(1))


@pytest.mark.parametrize(
    ("column", "to_row", "n", "cause"),
    [
        pytest.param("n int", lambda r: {"n": "not a number"}, 2, psycopg.DataError, id="type"),
        pytest.param(
            "n int NOT NULL",
            lambda r: {"n": None if r.id == "r1" else 1},
            3,
            psycopg.IntegrityError,
            id="not-null",
        ),
    ],
)
def test_rejected_row_is_permanent_and_atomic(
    make_table: Callable[..., None],
    make_sink: MakeSink,
    stored: Rows,
    *,
    column: LiteralString,
    to_row: Callable[[Record], dict[str, Any]],
    n: int,
    cause: type[psycopg.Error],
) -> None:
    """A value the column type or NOT NULL rejects: PermanentError for the batch, no row lands."""
    make_table(column)
    sink = make_sink(to_row=to_row)
    with pytest.raises(PermanentError) as info:
        sink.write(records(n))
    assert isinstance(info.value.__cause__, cause)
    assert stored() == []


def test_table_name_is_an_identifier_not_sql(
    postgres_dsn: str,
    table: str,
    make_table: Callable[..., None],
    sink_factory: MakeSink,
    stored: Rows,
) -> None:
    """A table name holding SQL is quoted as one identifier: nothing is injected."""
    make_table()
    evil = f'x (id) VALUES (1); DROP TABLE "{table}"; --'
    sink = sink_factory(postgres_dsn, evil)
    with pytest.raises(PermanentError):
        sink.write(records(1))
    assert stored() == []  # still there


def test_schema_qualified_table(
    postgres_dsn: str, db: Conn, table: str, sink_factory: MakeSink
) -> None:
    """'schema.table' targets that schema."""
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(table)))
    sink = sink_factory(postgres_dsn, f"{table}.ev", create_table=True)
    sink.write(records(1))
    count = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table, "ev")))
    assert count.fetchone() == (1,)


def test_unreachable_server_is_transient(table: str, sink_factory: MakeSink) -> None:
    """Nothing listening on the port: TransientError, and the password never shows."""
    sink = sink_factory(f"postgresql://u:pw-SECRET@127.0.0.1:{free_port()}/db", table)
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "pw-SECRET" not in str(info.value)
    assert "pw-SECRET" not in repr(sink)


def test_open_creates_the_table_when_reachable(make_sink: MakeSink, stored: Rows) -> None:
    """open() connects and creates the table before any write."""
    make_sink(create_table=True).open()
    assert stored() == []


def test_open_with_server_down_does_not_raise(table: str, sink_factory: MakeSink) -> None:
    """open() tolerates an unreachable server so the spool can start and buffer."""
    sink = sink_factory(f"postgresql://u@127.0.0.1:{free_port()}/db", table, create_table=True)
    sink.open()
    with pytest.raises(TransientError):
        sink.write(records(1))


def test_open_raises_a_permanent_refusal(
    postgres_dsn: str, db: Conn, table: str, sink_factory: MakeSink
) -> None:
    """A table that cannot be created (no privilege) is reported by open() at once."""
    role = f"r_{table}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    db.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    with pytest.raises(PermanentError, match="42501"):
        sink_factory(dsn, table, create_table=True).open()


def test_killed_connection_is_replaced_transparently(
    db: Conn, make_sink: MakeSink, stored: Rows
) -> None:
    """A pooled connection the server terminated is dropped and the write goes through."""
    sink = make_sink(create_table=True)
    sink.write(records(1))
    pids = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND datname = current_database() "
        "AND backend_type = 'client backend'"
    ).fetchall()
    assert pids
    sink.write(records(1, start=1))
    assert [r[0] for r in stored()] == ["r0", "r1"]


def test_stopped_server_is_transient_then_recovers(
    postgres_server_factory: Callable[[], PostgresServer], sink_factory: MakeSink
) -> None:
    """With the server stopped writes raise TransientError; after a restart they succeed."""
    server = postgres_server_factory()
    sink = sink_factory(server.dsn, "ev", create_table=True)
    sink.write(records(1))
    server.stop()
    with pytest.raises(TransientError):
        sink.write(records(1, start=1))
    server.start()
    sink.write(records(1, start=1))
    with psycopg.connect(server.dsn) as conn:
        assert conn.execute("SELECT id FROM ev ORDER BY id").fetchall() == [("r0",), ("r1",)]


def test_concurrent_writers_share_the_pool(make_sink: MakeSink, stored: Rows) -> None:
    """Six threads writing overlapping batches leave every id exactly once."""
    sink = make_sink(create_table=True)

    def work(k: int) -> None:
        for j in range(10):
            sink.write(records(10, start=(k * 10 + j) * 5))  # overlaps the next batch

    assert errors_in_threads(6, work) == []
    got = [r[0] for r in stored()]
    assert sorted(got) == sorted(f"r{i}" for i in range(6 * 10 * 5 + 5))


def test_unencodable_item_fails_alone(make_sink: MakeSink, stored: Rows) -> None:
    """Good rows are inserted; a record whose item is not JSON is named in PartialFailure."""
    sink = make_sink(create_table=True)
    bad = Record("bad", {"x": object()}, 1.0)
    with pytest.raises(PartialFailure) as info:
        sink.write([*records(2), bad])
    assert info.value.failed == ["bad"]
    assert [r[0] for r in stored()] == ["r0", "r1"]
    with pytest.raises(PermanentError, match="'bad'"):
        sink.write([bad])


# psycopg's DB-API classes and a few concrete SQLSTATE classes, with the expected family.
_EXPECTED: dict[type[psycopg.Error], type[SinkError]] = {
    psycopg.Error: TransientError,
    psycopg.InterfaceError: TransientError,
    psycopg.DatabaseError: TransientError,
    psycopg.OperationalError: TransientError,
    psycopg.InternalError: TransientError,
    psycopg.DataError: PermanentError,
    psycopg.IntegrityError: PermanentError,
    psycopg.ProgrammingError: PermanentError,
    psycopg.NotSupportedError: PermanentError,
    psycopg.errors.AdminShutdown: TransientError,
    psycopg.errors.CannotConnectNow: TransientError,
    psycopg.errors.SerializationFailure: TransientError,
    psycopg.errors.DeadlockDetected: TransientError,
    psycopg.errors.QueryCanceled: TransientError,
    psycopg.errors.DiskFull: TransientError,
    psycopg.errors.InFailedSqlTransaction: TransientError,
    psycopg.errors.UndefinedTable: PermanentError,
    psycopg.errors.UndefinedColumn: PermanentError,
    psycopg.errors.InsufficientPrivilege: PermanentError,
    psycopg.errors.InvalidTextRepresentation: PermanentError,
    psycopg.errors.NumericValueOutOfRange: PermanentError,
    psycopg.errors.NotNullViolation: PermanentError,
    psycopg.errors.UniqueViolation: PermanentError,
    psycopg.errors.CheckViolation: PermanentError,
    psycopg.errors.ForeignKeyViolation: PermanentError,
}


@pytest.mark.parametrize("cls", list(_EXPECTED), ids=lambda c: c.__name__)
def test_error_mapping(cls: type[psycopg.Error]) -> None:
    """Each psycopg error class maps to its family, with a redacted message."""
    mapped = map_pg_error(cls("failed for postgresql://u:pw-SECRET@h/db"), "sink", ["pw-SECRET"])
    assert type(mapped) is _EXPECTED[cls]
    assert "pw-SECRET" not in str(mapped)
    assert mapped.sink == "sink"


def _all_psycopg_errors() -> list[type[psycopg.Error]]:
    found: list[type[psycopg.Error]] = []
    todo: list[type[psycopg.Error]] = [psycopg.Error]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_psycopg_error_class_is_mapped_by_its_dbapi_family() -> None:
    """Every psycopg.Error subclass (all SQLSTATE classes) maps as its DB-API family does."""
    families = [
        (psycopg.DataError, PermanentError),
        (psycopg.IntegrityError, PermanentError),
        (psycopg.ProgrammingError, PermanentError),
        (psycopg.NotSupportedError, PermanentError),
    ]
    classes = _all_psycopg_errors()
    assert len(classes) > 200  # the SQLSTATE tree is there
    for cls in classes:
        expected = next((fam for base, fam in families if issubclass(cls, base)), TransientError)
        assert type(map_pg_error(cls("x"), "s")) is expected, cls


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("postgresql://u:pw-SECRET@h/db?bogus=1", "t"), {}),
        (("host=h password=pw-SECRET bogus", "t"), {}),
        (("postgresql://h/db", ""), {}),
        (("postgresql://h/db", "a.b.c"), {}),
        (("postgresql://h/db", "t"), {"create_table": True, "to_row": lambda r: {}}),
        (("postgresql://h/db", "t"), {"columns": []}),
        (("postgresql://h/db", "t"), {"columns": ["id", "x"]}),
    ],
)
def test_bad_configuration_is_config_error(args: tuple[str, str], kwargs: dict[str, Any]) -> None:
    """A bad DSN, table or option mix raises ConfigError without showing the password."""
    with pytest.raises(ConfigError) as info:
        PostgresSink(*args, **kwargs)
    assert "pw-SECRET" not in str(info.value)
