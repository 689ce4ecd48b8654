"""The Redis Streams backend: a spool's queue as a Redis stream read by a consumer group.

``Spool(path, sink, backend="redis://host:6379/0?stream=logs&group=shippers")`` keeps the
records in the stream instead of under ``path`` (which then holds only this host's dead
letters). Producers on any host ``XADD``; workers on any host ``XREADGROUP`` as members of one
consumer group, ``XACK`` a record once its sink returned (and ``XDEL`` it: the stream holds
only records not acknowledged yet), ``XAUTOCLAIM`` records left pending by a dead consumer
for ``claim_idle`` seconds, and dead-letter a record delivered more than ``max_deliveries``
times. Record ids are stream entry ids (``"1712345678901-0"``), the same on every host and
every redelivery; a dead letter requeued keeps its id (in the entry's ``r`` field).

Each entry has the fields ``d`` (the serialized item), ``t`` (``enqueued_at``, epoch seconds)
and, for a requeued dead letter, ``r`` (its record id).
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from spoolkit._log import get_logger
from spoolkit._redact import redact_text, redact_url, secrets_in_url
from spoolkit.deadletter import DeadEntry, DeadError, DeadLetters
from spoolkit.errors import ClosedError, ConfigError, PermanentError, SerializationError, SpoolError
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    from redis.retry import Retry

    from spoolkit.sinks.redis import map_redis_error
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the Redis backend needs redis: pip install 'spoolkit[redis]'") from exc

__all__ = ["RedisBackend", "StreamMessage"]

T = TypeVar("T")

_OPTIONS = ("stream", "group", "consumer", "claim_idle", "max_deliveries", "maxlen", "serializer")
_POLL = 0.2  # the longest one blocking read lasts, so close() is noticed soon
_TXN_CHUNK = 1000  # entries per MULTI/EXEC in put_many


@dataclass(slots=True, eq=False)
class StreamMessage:
    """One delivery of a stream entry (what ``get_batch`` hands out).

    Attributes:
        entry_id: the stream entry id (what XACK takes).
        record_id: ``entry_id``, or for a requeued dead letter the id it had first.
        item: the decoded item.
        enqueued_at: when it was first put (epoch seconds).
        deliveries: Redis's delivery count of the entry (1 on its first delivery).
    """

    entry_id: str
    record_id: str
    item: Any
    enqueued_at: float
    deliveries: int


class RedisBackend:
    """A :class:`~spoolkit.backends.Backend` over one Redis stream and consumer group.

    Delivery is at least once: a record is removed only by :meth:`ack`. Records a consumer
    holds (handed out, nacked, or read ahead) stay pending under its name; if it dies they are
    claimed by another consumer once idle for ``claim_idle`` seconds, so ``claim_idle`` must
    exceed the longest a batch is held (sink call plus in-place retries) or a slow batch is
    delivered twice. Durability is the server's: ``put_durable`` returns once Redis has the
    entry, on disk only as far as its ``appendfsync`` setting says.

    Args:
        url_or_client: a ``redis://``/``rediss://`` URL or a ``redis.Redis`` client (not one
            with ``decode_responses=True``: payloads are bytes).
        stream: the stream key.
        group: the consumer group (created at the first read, from the stream's start).
        consumer: this consumer's name in the group; default ``<hostname>-<pid>-<random>``.
        claim_idle: seconds a pending record must sit idle before another consumer claims it.
        max_deliveries: deliveries after which a record is dead-lettered, not delivered.
        maxlen: cap the stream at about this many entries (``XADD MAXLEN ~``). Trimming
            drops the oldest entries whether delivered or not; None never trims.
        serializer: ``"pickle"``, ``"json"``, ``"raw"`` or a serializer object; every host
            of a stream must use the same one.

    Raises:
        ConfigError: a bad option or URL.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str | None = None,
        claim_idle: float = 60.0,
        max_deliveries: int = 10,
        maxlen: int | None = None,
        serializer: str | Serializer = "pickle",
    ) -> None:
        for name, value in (("stream", stream), ("group", group), ("consumer", consumer)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string, not {value!r}")
        if isinstance(claim_idle, bool) or not claim_idle > 0:
            raise ConfigError(f"claim_idle must be > 0 seconds, not {claim_idle!r}")
        if isinstance(max_deliveries, bool) or max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, not {max_deliveries!r}")
        if maxlen is not None and (isinstance(maxlen, bool) or maxlen < 1):
            raise ConfigError(f"maxlen must be >= 1 entries or None, not {maxlen!r}")
        self.stream, self.group = stream, group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.claim_idle, self.max_deliveries, self.maxlen = claim_idle, max_deliveries, maxlen
        self._serializer_name, self._serializer = resolve(serializer)
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self._secrets = secrets_in_url(url_or_client)
            self._description = f"RedisBackend({redact_url(url_or_client)!r}, stream={stream!r})"
            self.client = _client_from_url(url_or_client, self._secrets)
        else:
            if url_or_client.get_connection_kwargs().get("decode_responses"):
                raise ConfigError("the Redis client must not use decode_responses=True")
            self._secrets = []
            self._description = f"RedisBackend(<client>, stream={stream!r})"
            self.client = url_or_client
        self._log = get_logger(backend=self._description, consumer=self.consumer)
        self._lock = threading.Lock()  # _ready, and reads that move entries into it
        self._ready: collections.deque[StreamMessage] = collections.deque()
        self._closed = threading.Event()
        self._group_ready = False
        self._history_read = False
        self._claim_cursor = "0-0"
        self._next_claim = float("-inf")
        self._claim_every = min(claim_idle / 2, 5.0)
        self._prefetch = 100
        self._dead: DeadLetters | None = None
        self._backlog = 0

    @classmethod
    def from_url(cls, url: str, *, serializer: str | Serializer = "pickle") -> RedisBackend:
        """``redis://[user:pass@]host[:port]/db?stream=S&group=G[&claim_idle=..&...]``.

        The query takes the constructor's options (``stream``, ``group``, ``consumer``,
        ``claim_idle``, ``max_deliveries``, ``maxlen``, ``serializer``) and redis-py's
        connection options (``socket_timeout``, ``max_connections``, ...).

        Raises:
            ConfigError: ``stream`` or ``group`` missing, an unknown or bad option.
        """
        parts = urlsplit(url)
        options: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        known = sorted(URL_QUERY_ARGUMENT_PARSERS)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OPTIONS:
                options[key] = value
            elif key in URL_QUERY_ARGUMENT_PARSERS:
                rest.append((key, value))
            else:
                raise ConfigError(
                    f"unknown option {key!r} in Redis backend URL {redact_url(url)!r}; accepted: "
                    f"{', '.join(_OPTIONS)} (stream and group required), and redis-py's "
                    f"{', '.join(known)}"
                )
        missing = [k for k in ("stream", "group") if not options.get(k)]
        if missing:
            raise ConfigError(
                f"Redis backend URL {redact_url(url)!r} lacks {' and '.join(missing)}: add "
                f"?stream=NAME&group=NAME (accepted options: {', '.join(_OPTIONS)})"
            )
        query = "&".join(f"{k}={v}" for k, v in rest)
        client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        return cls(
            client_url,
            stream=options["stream"],
            group=options["group"],
            consumer=options.get("consumer"),
            claim_idle=_number(options, "claim_idle", float, 60.0),
            max_deliveries=_number(options, "max_deliveries", int, 10),
            maxlen=_number(options, "maxlen", int, None),
            serializer=options.get("serializer", serializer),
        )

    def __repr__(self) -> str:
        return self._description

    def bind_dead_letters(self, dead: DeadLetters) -> None:
        """Where records over ``max_deliveries`` (or undecodable) go: the spool's dead letters.

        Unbound, a record over ``max_deliveries`` is logged (``max_deliveries_exceeded``) and
        delivered anyway; an undecodable one is logged (``undecodable_record``) and left
        pending.
        """
        self._dead = dead

    # -- Redis calls -------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; map redis-py errors to TransientError/PermanentError (the one place)."""
        if self._closed.is_set():
            raise ClosedError(f"{self._description} is closed")
        try:
            return fn()
        except redis.RedisError as exc:
            if self._closed.is_set():
                raise ClosedError(f"{self._description} is closed") from exc
            raise map_redis_error(exc, self._description, self._secrets) from exc

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    @property
    def uid(self) -> str:
        """``"redis-stream:<stream>"`` (record ids are bare entry ids, without this prefix)."""
        return f"redis-stream:{self.stream}"

    def encode(self, item: Any) -> bytes:
        """Serialize ``item``.

        Raises:
            SerializationError: the serializer refused it.
        """
        try:
            return self._serializer.dumps(item)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {type(item).__name__} item: {exc}; nothing was stored"
            ) from exc

    def decode(self, payload: bytes) -> Any:
        """Deserialize ``payload``."""
        return self._serializer.loads(payload)

    def _fields(self, payload: bytes, enqueued_at: float, rid: str | None = None) -> Any:
        fields: dict[str, Any] = {"d": payload, "t": repr(enqueued_at)}
        if rid is not None:
            fields["r"] = rid
        return fields

    def _xadd(self, target: Any, fields: Any) -> Any:
        return target.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)

    # -- putting -----------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """XADD ``item`` (one round trip). A stream is never full: never ``queue.Full``.

        Raises:
            TransientError: Redis is unreachable or busy. PermanentError: Redis refused it.
        """
        self.put_durable(item, block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """XADD ``item`` and return its record id (as durable as the server's persistence)."""
        fields = self._fields(self.encode(item), time.time())
        entry = self._call(lambda: self._xadd(self.client, fields))
        return _text(entry)

    def put_many(self, items: Iterable[Any]) -> None:
        """Serialize every item, then XADD them in order, up to 1000 per MULTI/EXEC."""
        now = time.time()
        payloads = [self.encode(item) for item in items]
        for i in range(0, len(payloads), _TXN_CHUNK):
            chunk = payloads[i : i + _TXN_CHUNK]

            def send(chunk: list[bytes] = chunk) -> None:
                with self.client.pipeline(transaction=True) as pipe:
                    for p in chunk:
                        self._xadd(pipe, self._fields(p, now))
                    pipe.execute()

            self._call(send)

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """XADD a requeued dead letter as a new entry that keeps ``record_id``."""
        fields = self._fields(payload, enqueued_at, record_id)
        self._call(lambda: self._xadd(self.client, fields))

    # -- taking ------------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """Wait until a message is ready here, reading it (and due claims) from Redis.

        Reads happen ahead of ``get_batch``: what was read is pending under this consumer.
        While Redis is unreachable, tries again every 0.1 to 2 s (logged) until ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.1
        while True:
            try:
                if self._fill():
                    return True
                remaining = _POLL if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._block(min(remaining, _POLL, self._claim_every))
                backoff = 0.1
            except ClosedError:
                raise
            except SpoolError as exc:
                self._log.warning("redis_read_failed", error=repr(exc), retry_in=backoff)
                if deadline is not None and time.monotonic() + backoff > deadline:
                    raise
                if self._closed.wait(backoff):
                    raise ClosedError(f"{self._description} is closed") from None
                backoff = min(2.0, backoff * 2)

    def _fill(self) -> bool:
        """Read what is due into ``_ready`` without blocking; True if anything is ready."""
        with self._lock:
            if not self._ready:
                self._ready.extend(self._read(self._prefetch))
            return bool(self._ready)

    def _block(self, seconds: float) -> None:
        """Block until an entry newer than the newest one delivered arrives, or ``seconds``."""

        def newest() -> Any:
            return self.client.xrevrange(self.stream, "+", "-", count=1)

        last = self._call(newest)
        start = _text(last[0][0]) if last else "0-0"
        ms = max(1, int(seconds * 1000))
        self._call(lambda: self.client.xread({self.stream: start}, count=1, block=ms))

    def _read(self, count: int) -> list[StreamMessage]:
        """This consumer's own pending history (once, first), claims due, then new entries."""
        got: list[StreamMessage] = []
        if not self._history_read:
            got += self._group_read("0", count)
            self._history_read = len(got) < count  # the rest next time
        if len(got) < count:
            got += self._claim(count - len(got))
        if len(got) < count:
            got += self._group_read(">", count - len(got))
        return self._screen(got)

    def _group_read(self, start: str, count: int) -> list[StreamMessage]:
        def read() -> Any:
            if not self._group_ready:
                self._ensure_group()
            try:
                return self.client.xreadgroup(
                    self.group, self.consumer, {self.stream: start}, count=count
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._ensure_group()  # the stream or group was deleted: start over
                return []

        reply = self._call(read)
        entries = reply[0][1] if reply else []
        gone = [e for e, f in entries if not f]  # history of entries trimmed away meanwhile
        if gone:
            self._call(lambda: self.client.xack(self.stream, self.group, *gone))
        msgs = [self._message(e, f, 1) for e, f in entries if f]
        if start != ">" and msgs:
            self._count_deliveries(msgs)
        return msgs

    def _claim(self, count: int) -> list[StreamMessage]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        if not self._group_ready:
            self._call(self._ensure_group)
        idle_ms = int(self.claim_idle * 1000)
        reply = self._call(
            lambda: self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                start_id=self._claim_cursor,
                count=count,
            )
        )
        self._claim_cursor = _text(reply[0])
        if self._claim_cursor == "0-0":  # scanned to the end: rest until the next round
            self._next_claim = now + self._claim_every
        msgs = [self._message(e, f, 1) for e, f in reply[1] if f]
        if msgs:
            self._count_deliveries(msgs)
            self._log.info("records_claimed", count=len(msgs), first=msgs[0].record_id)
        return msgs

    def _count_deliveries(self, msgs: list[StreamMessage]) -> None:
        def counts() -> Any:
            with self.client.pipeline(transaction=False) as pipe:
                for m in msgs:
                    pipe.xpending_range(
                        self.stream, self.group, m.entry_id, m.entry_id, 1, self.consumer
                    )
                return pipe.execute()

        for m, rows in zip(msgs, self._call(counts), strict=True):
            if rows:
                m.deliveries = int(rows[0]["times_delivered"])

    def _message(self, entry: Any, fields: Any, deliveries: int) -> StreamMessage:
        eid = _text(entry)
        rid = _text(fields[b"r"]) if b"r" in fields else eid
        enqueued_at = float(fields.get(b"t", 0.0))
        try:
            item = self.decode(fields[b"d"])
        except Exception as exc:
            item = _Undecodable(fields, exc)
        return StreamMessage(eid, rid, item, enqueued_at, deliveries)

    def _screen(self, msgs: list[StreamMessage]) -> list[StreamMessage]:
        """Dead-letter what was delivered too often or cannot be decoded; return the rest."""
        bad = [
            m for m in msgs if m.deliveries > self.max_deliveries or type(m.item) is _Undecodable
        ]
        if not bad:
            return msgs
        if self._dead is None:  # nowhere to put them: deliver what can be, log the rest
            for m in bad:
                undecodable = type(m.item) is _Undecodable
                event = "undecodable_record" if undecodable else "max_deliveries_exceeded"
                self._log.error(event, record_id=m.record_id, deliveries=m.deliveries)
            return [m for m in msgs if type(m.item) is not _Undecodable]
        now = time.time()
        entries = []
        for m in bad:
            if type(m.item) is _Undecodable:
                error: BaseException = m.item.error
                payload = self.encode(m.item.describe())
            else:
                error = PermanentError(
                    f"record {m.record_id} was delivered {m.deliveries} times, more than "
                    f"max_deliveries={self.max_deliveries} (its consumers died or stalled "
                    "holding it); dead-lettered without another attempt",
                    sink=self._description,
                )
                payload = self.encode(m.item)
            entries.append(
                DeadEntry(
                    m.record_id,
                    payload,
                    m.enqueued_at,
                    DeadError.from_exception(error),
                    m.deliveries,
                    m.enqueued_at,
                    now,
                )
            )
        self._dead.add(entries)  # fsynced before the entries leave the stream
        self.ack(*bad)
        self._log.error("records_dead_lettered", count=len(bad), first=bad[0].record_id)
        return [m for m in msgs if all(m is not b for b in bad)]

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[StreamMessage]:
        """Hand out up to ``max_items`` messages: nacked ones first, then read from Redis."""
        self._prefetch = max_items
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                out = [self._ready.popleft() for _ in range(min(max_items, len(self._ready)))]
                if len(out) < max_items:
                    out += self._read(max_items - len(out))
            if out:
                return out
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return out
            self.wait(remaining)

    def record_id(self, message: StreamMessage) -> str:
        """The entry id (or the id a requeued dead letter had first)."""
        return message.record_id

    def record_ids(self, messages: Sequence[StreamMessage]) -> list[str]:
        """``record_id`` of each message."""
        return [m.record_id for m in messages]

    def ack(self, *messages: StreamMessage) -> None:
        """XACK and XDEL the entries, in one MULTI/EXEC."""
        if not messages:
            return
        ids = [m.entry_id for m in messages]

        def send() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, self.group, *ids)
                pipe.xdel(self.stream, *ids)
                pipe.execute()

        self._call(send)

    def nack(self, *messages: StreamMessage) -> None:
        """Keep the messages here to hand out again first (they stay pending in Redis)."""
        if self._closed.is_set():
            raise ClosedError(f"{self._description} is closed")
        with self._lock:
            self._ready.extendleft(reversed(messages))

    def drop_oldest(self) -> bool:
        """Take one message and acknowledge it unseen."""
        batch = self.get_batch(1, 0)
        self.ack(*batch)
        return bool(batch)

    # -- gauges ------------------------------------------------------------------------------

    def waiting(self) -> int:
        """Entries no consumer took yet (``XLEN`` minus pending), plus those ready here."""
        summary = self._call(lambda: (self._len(), self.client.xpending(self.stream, self.group)))
        length, pending = summary
        with self._lock:
            return max(0, length - int(pending["pending"])) + len(self._ready)

    def _len(self) -> int:
        return int(self.client.xlen(self.stream))

    def backlog(self) -> int:
        """``XLEN``: acknowledged entries are deleted, so every entry is waiting or pending.

        After :meth:`close`, the last value read.
        """
        if not self._closed.is_set():
            self._backlog = self._call(self._len)
        return self._backlog

    def bytes_used(self) -> int:
        """0: the records are in Redis's memory, not on this host's disk (see memory_usage)."""
        return 0

    def memory_usage(self) -> int:
        """``MEMORY USAGE`` of the stream key (bytes, sampled; 0 when it does not exist)."""
        return int(self._call(lambda: self.client.memory_usage(self.stream)) or 0)

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the next message to hand out: ready here, else the first entry
        after the group's last delivered id. Records pending at other consumers don't count."""
        with self._lock:
            if self._ready:
                return min(m.enqueued_at for m in self._ready)

            def first() -> Any:
                groups = self.client.xinfo_groups(self.stream)
                last = next((g for g in groups if _text(g["name"]) == self.group), None)
                start = "-" if last is None else "(" + _text(last["last-delivered-id"])
                return self.client.xrange(self.stream, start, "+", count=1)

            try:
                entries = self._call(first)
            except PermanentError:  # no such key yet
                return None
            return float(entries[0][1].get(b"t", 0.0)) if entries else None

    def close(self) -> None:
        """Release the messages held here to other consumers at once; close an owned client.

        Messages a worker still holds stay pending, claimed by others after ``claim_idle``.
        """
        if self._closed.is_set():
            return
        with self._lock:
            held: list[Any] = [m.entry_id for m in self._ready]
            self._ready.clear()
            self._closed.set()
        with contextlib.suppress(redis.RedisError):
            if held:  # idle long enough for the next XAUTOCLAIM; JUSTID: count unchanged
                idle = int(self.claim_idle * 1000) + 1
                self.client.xclaim(
                    self.stream, self.group, self.consumer, 0, held, idle=idle, justid=True
                )
            if self._group_ready and not self.client.xpending_range(
                self.stream, self.group, "-", "+", 1, self.consumer
            ):
                self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        if self._owned:
            self.client.close()


class _Undecodable:
    """The item of an entry the serializer cannot read (dead-lettered as a description)."""

    def __init__(self, fields: Any, error: Exception) -> None:
        self.fields, self.error = fields, error

    def describe(self) -> dict[str, str]:
        return {_text(k): repr(v) for k, v in self.fields.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(options: dict[str, str], key: str, kind: type[Any], default: Any) -> Any:
    if key not in options:
        return default
    try:
        return kind(options[key])
    except ValueError:
        raise ConfigError(f"{key} must be a {kind.__name__}, not {options[key]!r}") from None


def _client_from_url(url: str, secrets: Sequence[str]) -> redis.Redis:
    """A client that fails fast (10 s timeouts, one reconnect); the URL's query overrides."""
    try:
        return redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=10.0, retry=Retry(NoBackoff(), 1)
        )
    except (ValueError, TypeError) as exc:
        detail = redact_text(str(exc), secrets)
        raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {detail}") from None
