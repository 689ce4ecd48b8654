"""PostgresSink: insert records into a PostgreSQL table, once per record id."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spoolkit._internal.json_utf8 import SURROGATE
from spoolkit._internal.redact import carry_secrets, redact_text, redact_url, secrets_in_url
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, SinkError, TransientError
from spoolkit.sinks._encode import dumps
from spoolkit.typing import Record

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.types.json import Jsonb
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("PostgresSink needs psycopg: pip install 'spoolkit[postgres]'") from exc

__all__ = ["PostgresSink", "map_pg_error"]

ToRow = Callable[[Record], Mapping[str, Any]]
"""Maps a record to ``{column: value}``; the sink adds the ``id`` column itself."""

_DEFAULT_COLUMNS = ("enqueued_at", "item")


def _identity(text: Any) -> Any:
    return text


@dataclass
class _Rows:
    """A batch turned into parameter rows, grouped by column list; and the records that failed."""

    groups: dict[tuple[str, ...], list[list[Any]]] = field(default_factory=dict)
    bad: list[tuple[Record, Exception]] = field(default_factory=list)

    def describe_bad(self) -> str:
        record, exc = self.bad[0]
        more = f" (and {len(self.bad) - 1} more)" if len(self.bad) > 1 else ""
        return (
            f"record {record.id!r}{more} cannot be turned into a row: {type(exc).__name__}: {exc}"
        )


class PostgresSink:
    """Insert each record as a row keyed by ``record.id``; redeliveries add no duplicate rows.

    Rows are written with ``INSERT ... ON CONFLICT (id) DO NOTHING`` through psycopg's
    ``executemany`` (pipelined: one network round trip for the batch), all in one transaction.
    A batch that is delivered again after a crash or a lost acknowledgement inserts nothing
    new: with a spool's at-least-once delivery this gives effectively-once rows. The table
    needs a primary key or unique index on ``id``.

    By default a row is ``(id, enqueued_at, item)``: ``enqueued_at`` as ``timestamptz``,
    ``item`` as ``jsonb``. ``create_table=True`` creates that table when missing:
    ``(id text primary key, enqueued_at timestamptz not null, item jsonb)``. ``to_row`` maps
    a record to your own columns instead (``dict`` and ``list`` values are sent as ``jsonb``);
    the sink always adds ``id``. Give ``columns`` to fix the column list (missing keys insert
    NULL, unknown keys fail the record); without it each row's keys name its columns.

    PostgreSQL stores no lone surrogate (``"caf\\udce9"``, a ``surrogateescape``d file name),
    in ``text`` or in ``jsonb``, not even as a JSON escape: the sink writes each as the six
    characters ``\\udce9`` (a backslash, ``u`` and four hex digits, as Python's
    ``backslashreplace`` does), so the record is stored and the byte can still be read.

    Workers each borrow a connection from a small pool (one per concurrent ``write``); a
    connection found broken is dropped and the write is tried once more on a fresh one, since
    the insert is idempotent. The table name is quoted as an identifier (``"schema.table"``
    reads as schema and table); it is case-sensitive.

    Errors map in :func:`map_pg_error`: connection trouble is transient; bad data, constraint
    violations and a missing table or column are permanent. No password appears in
    ``repr(sink)`` or in an error message.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        table: the target table, optionally ``schema.table``.
        create_table: create the default table if it does not exist (not with ``to_row``).
        to_row: maps a record to ``{column: value}``.
        columns: the columns ``to_row`` fills, in order.
        connect_timeout: seconds allowed to connect, unless the DSN sets ``connect_timeout``.

    Raises:
        ConfigError: a bad DSN, table name or option combination.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        create_table: bool = False,
        to_row: ToRow | None = None,
        columns: Sequence[str] | None = None,
        connect_timeout: int = 10,
    ) -> None:
        self._secrets = secrets_in_url(dsn)
        shown = redact_url(dsn)
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            # from None: libpq's message may quote the DSN.
            raise ConfigError(
                f"bad PostgreSQL DSN {shown!r}: {redact_text(str(exc), self._secrets)}"
            ) from None
        parts = table.split(".") if isinstance(table, str) else []
        if not 1 <= len(parts) <= 2 or not all(parts):  # table or schema.table
            raise ConfigError(f"table must be 'name' or 'schema.name', not {table!r}")
        if columns is not None:
            columns = tuple(columns)
            if not columns or not all(isinstance(c, str) and c for c in columns):
                raise ConfigError("columns must be a non-empty list of column names")
            if "id" in columns:
                raise ConfigError("columns must not list 'id': the sink fills it with record.id")
        if create_table and (to_row is not None or columns is not None):
            raise ConfigError(
                "create_table makes the default (id, enqueued_at, item) table; "
                "with to_row or columns, create your table yourself"
            )
        self.table = table
        self.create_table = create_table
        self.columns: tuple[str, ...] | None = columns
        self._dsn = dsn
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = connect_timeout
        self._to_row = to_row
        self._table = sql.Identifier(*parts)
        self._description = f"PostgresSink({shown!r}, table={table!r})"
        self._lock = threading.Lock()  # guards the pool
        self._table_lock = threading.Lock()  # one CREATE TABLE at a time
        self._idle: list[psycopg.Connection[Any]] = []
        self._generation = 0
        self._table_ready = not create_table

    def __repr__(self) -> str:
        return self._description

    def open(self) -> None:
        """Connect and, with ``create_table``, create the table, if the server is reachable.

        A server that cannot be reached is not an error here: the spool keeps buffering and
        the first write tries again. A permanent refusal (no privilege to create the table)
        is raised at once, so a misconfiguration shows when the spool starts.

        Raises:
            PermanentError: the database refused to create the table.
        """
        with contextlib.suppress(TransientError):
            self._run(lambda conn: None)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections without closing them (psycopg
        sends nothing on the parent's sockets when a forked child drops them); the child
        connects anew at its first write."""
        self._lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._idle = []
        self._generation += 1

    def close(self) -> None:
        """Close every pooled connection; connections in use close when their write ends."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for conn in idle:
            conn.close()

    def write(self, batch: Sequence[Record]) -> None:
        """Insert the batch in one transaction, skipping ids already in the table.

        Raises:
            TransientError: connection trouble (server down, restarted, timed out).
            PermanentError: the database refused the rows (bad data, missing table or
                column, constraint violation), or no record could be turned into a row.
            PartialFailure: some records could not be turned into rows; the others were
                inserted.
        """
        if not batch:
            return
        rows = self._rows(batch)
        if rows.bad and not rows.groups:
            raise PermanentError(rows.describe_bad(), sink=self._description) from rows.bad[0][1]
        self._run(lambda conn: self._insert(conn, rows.groups))
        if rows.bad:
            cause = PermanentError(rows.describe_bad(), sink=self._description)
            raise PartialFailure(
                [r.id for r, _ in rows.bad],
                rows.describe_bad(),
                cause=cause,
                sink=self._description,
            ) from rows.bad[0][1]

    # -- rows ------------------------------------------------------------------------------

    def _rows(self, batch: Sequence[Record]) -> _Rows:
        out = _Rows()
        for record in batch:
            try:
                columns, values = self._row(record)
            except Exception as exc:  # a user's to_row may raise anything
                out.bad.append((record, exc))
            else:
                out.groups.setdefault(("id", *columns), []).append([record.id, *values])
        return out

    def _row(self, record: Record) -> tuple[tuple[str, ...], list[Any]]:
        if self._to_row is None:
            when = datetime.fromtimestamp(record.enqueued_at, UTC)
            return _DEFAULT_COLUMNS, [when, _jsonb(record.item)]
        mapped = self._to_row(record)
        if not isinstance(mapped, Mapping):
            raise TypeError(f"to_row must return a dict, not {type(mapped).__name__}")
        if "id" in mapped and mapped["id"] != record.id:
            raise ValueError("to_row must not set 'id': the sink fills it with record.id")
        row = {k: v for k, v in mapped.items() if k != "id"}
        if self.columns is None:
            columns = tuple(row)
        else:
            extra = sorted(set(row) - set(self.columns))
            if extra:
                raise ValueError(f"to_row returned columns not in columns=: {extra}")
            columns = self.columns
        return columns, [_adapt(row.get(c)) for c in columns]

    # -- database --------------------------------------------------------------------------

    def _insert(self, conn: psycopg.Connection[Any], groups: dict[tuple[str, ...], Any]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            for columns, params in groups.items():
                query = sql.SQL(
                    "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT (id) DO NOTHING"
                ).format(
                    table=self._table,
                    columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                cur.executemany(query, params)

    def _ensure_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the default table once; workers wait on the lock rather than race."""
        with self._table_lock:
            if self._table_ready:
                return
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {table} ("
                    "id text PRIMARY KEY, enqueued_at timestamptz NOT NULL, item jsonb)"
                ).format(table=self._table)
            )
            self._table_ready = True

    def _run(self, work: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run ``work`` on a pooled connection, once more on a fresh one if the pooled was dead."""
        for attempt in range(2):
            try:
                conn, generation, reused = self._acquire()
            except psycopg.Error as exc:
                raise map_pg_error(exc, self._description, self._secrets) from exc
            try:
                if not self._table_ready:
                    self._ensure_table(conn)
                work(conn)
            except psycopg.Error as exc:
                broken = conn.broken or conn.closed
                self._release(conn, generation, discard=broken)
                if reused and broken and attempt == 0:
                    continue  # a pooled connection the server dropped while idle: try afresh
                raise map_pg_error(exc, self._description, self._secrets) from exc
            except BaseException:
                self._release(conn, generation, discard=True)
                raise
            self._release(conn, generation, discard=False)
            return

    def _acquire(self) -> tuple[psycopg.Connection[Any], int, bool]:
        with self._lock:
            generation = self._generation
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn, generation, True
        conn = psycopg.connect(self._dsn, **self._connect_kwargs)
        return conn, generation, False

    def _release(self, conn: psycopg.Connection[Any], generation: int, *, discard: bool) -> None:
        with self._lock:
            if not discard and generation == self._generation and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()


def map_pg_error(exc: psycopg.Error, sink: str, secrets: Sequence[str] = ()) -> SinkError:
    """Turn a psycopg error into a spoolkit error: the one place PostgresSink decides.

    - ``OperationalError`` (server down or restarting, connection lost, timeouts, deadlocks,
      serialization failures, disk full), ``InterfaceError`` (client-side connection trouble)
      and ``InternalError`` (for example an aborted transaction): :class:`TransientError`.
    - ``DataError`` (a value the column type rejects), ``IntegrityError`` (a NOT NULL, CHECK
      or foreign key violation; the id conflict itself is absorbed by ``ON CONFLICT``),
      ``ProgrammingError`` (missing table or column, no privilege, a value psycopg cannot
      adapt) and ``NotSupportedError``: :class:`PermanentError`.
    - any other ``psycopg.Error``: :class:`TransientError`.

    Args:
        exc: the psycopg error.
        sink: the sink's redacted description.
        secrets: values to mask if the message echoes them.

    Returns:
        The spoolkit error to raise ``from exc``.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    state = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
    detail = " ".join(str(exc).split()) or "(no message)"
    message = redact_text(f"{type(exc).__name__}{state}: {detail}", secrets)
    permanent = (
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.ProgrammingError,
        psycopg.NotSupportedError,
    )
    kind = PermanentError if isinstance(exc, permanent) else TransientError
    return carry_secrets(kind(message, sink=sink), secrets)


def _jsonb(value: Any) -> Jsonb:
    """Wrap ``value`` as jsonb, encoding it now so a bad item fails its record, not the batch."""
    text = dumps(value)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: in the JSON text, an escaped backslash + uXXXX
        text = SURROGATE.sub(_json_backslashreplace, text)
    return Jsonb(text, dumps=_identity)


def _json_backslashreplace(match: re.Match[str]) -> str:
    return f"\\\\u{ord(match.group()):04x}"


def _adapt(value: Any) -> Any:
    if type(value) is str:
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: stored as the text \\uXXXX
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    return _jsonb(value) if isinstance(value, dict | list) else value
