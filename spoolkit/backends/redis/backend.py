"""The Redis Streams backend: a spool's queue as a Redis stream read by a consumer group.

``Spool(path, sink, backend="redis://host:6379/0?stream=logs&group=shippers")`` keeps the
records in the stream instead of under ``path`` (which then holds only this host's dead
letters). Producers on any host ``XADD``; workers on any host ``XREADGROUP`` as members of one
consumer group, ``XACK`` a record once its sink returned (and ``XDEL`` it: the stream holds
only records not acknowledged yet), ``XAUTOCLAIM`` records left pending by a dead consumer
for ``claim_idle`` seconds. Record ids are stream entry ids (``"1712345678901-0"``), the
same on every host and every redelivery; a dead letter requeued keeps its id (in the entry's
``r`` field). Every entry read is handed out with Redis's delivery count, undecodable ones too
(as :class:`~spoolkit.backends.base.Undecodable` items): the spool dead-letters those and the
ones delivered more than ``max_deliveries`` times.

:class:`RedisBackend` is a facade over :mod:`spoolkit.backends.redis_url` (the URL's own
options, checked without redis-py), :mod:`.options` (redis-py's options, the client),
:mod:`.entries` (entry fields, :class:`StreamMessage`), :mod:`.reader` (group reads,
``XAUTOCLAIM``) and :mod:`.writer` (``XADD``, ``XACK``); what it shares with the JetStream
backend is in :mod:`spoolkit.backends.streams`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from spoolkit._internal.log import get_logger
from spoolkit.backends.base import Backend
from spoolkit.backends.redis_url import check_limits, check_names, number
from spoolkit.backends.streams import StreamBackend
from spoolkit.errors import ClosedError, ConfigError, PermanentError, SpoolError
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

try:
    import redis

    from spoolkit._internal.redis_errors import map_redis_error
    from spoolkit.backends.redis.entries import StreamMessage, text
    from spoolkit.backends.redis.options import connect, default_consumer, split_url
    from spoolkit.backends.redis.reader import GroupReader
    from spoolkit.backends.redis.writer import StreamWriter
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the Redis backend needs redis: pip install 'spoolkit[redis]'") from exc

__all__ = ["RedisBackend", "StreamMessage"]

T = TypeVar("T")

_POLL = 0.2  # the longest one blocking read lasts, so close() is noticed soon


class RedisBackend(StreamBackend[StreamMessage]):
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
        max_deliveries: deliveries after which the spool dead-letters a record instead of
            delivering it (:attr:`max_deliveries`).
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
        check_names(stream, group, consumer)
        check_limits(claim_idle, max_deliveries, maxlen)
        self.stream, self.group = stream, group
        self.consumer = consumer or default_consumer()
        self.claim_idle, self._max_deliveries, self.maxlen = claim_idle, max_deliveries, maxlen
        self._serializer_name, self._serializer = resolve(serializer)
        self._owned = isinstance(url_or_client, str)
        self.client, self._secrets, self._description = connect(url_or_client, stream)
        self._log = get_logger(backend=self._description, consumer=self.consumer)
        self._lock = threading.Lock()  # _ready, and reads that move entries into it
        self._ready: collections.deque[StreamMessage] = collections.deque()
        self._closed = threading.Event()
        self._init_counters()
        self._reader = GroupReader(
            self.client,
            stream=stream,
            group=group,
            consumer=self.consumer,
            claim_idle=claim_idle,
            call=self._call,
            item=self._item,
            log=self._log,
        )
        self._writer = StreamWriter(
            self.client, stream=stream, group=group, maxlen=maxlen, call=self._call
        )
        self._prefetch = 100
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
        client_url, options = split_url(url)
        return cls(
            client_url,
            stream=options["stream"],
            group=options["group"],
            consumer=options.get("consumer"),
            claim_idle=number(options, "claim_idle", float, 60.0),
            max_deliveries=number(options, "max_deliveries", int, 10),
            maxlen=number(options, "maxlen", int, None),
            serializer=options.get("serializer", serializer),
        )

    def __repr__(self) -> str:
        return self._description

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

    @property
    def uid(self) -> str:
        """``"redis-stream:<stream>"`` (record ids are bare entry ids, without this prefix)."""
        return f"redis-stream:{self.stream}"

    # -- putting -----------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """XADD ``item`` (one round trip). A stream is never full: never ``queue.Full``.

        Raises:
            TransientError: Redis is unreachable or busy. PermanentError: Redis refused it.
        """
        self.put_durable(item, block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """XADD ``item`` and return its record id (as durable as the server's persistence)."""
        rid = self._writer.add(self.encode(item), time.time())
        self._stored(1)
        return rid

    def put_many(self, items: Iterable[Any]) -> None:
        """Serialize every item, then XADD them in order, up to 1000 per MULTI/EXEC."""
        now = time.time()
        self._writer.add_many([self.encode(item) for item in items], now, self._stored)

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """XADD a requeued dead letter as a new entry that keeps ``record_id``.

        Raises:
            ConfigError: ``record_id`` is not a stream entry id.
        """
        ms, sep, seq = record_id.partition("-")
        if not (sep and ms.isdigit() and seq.isdigit()):
            raise ConfigError(f"record id {record_id!r} was not issued by {self._description}")
        self._writer.add(payload, enqueued_at, record_id)

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
                self._reader.block(min(remaining, _POLL, self._reader.claim_every))
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
                self._ready.extend(self._reader.read(self._prefetch))
            return bool(self._ready)

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[StreamMessage]:
        """Hand out up to ``max_items`` messages: nacked ones first, then read from Redis
        (this consumer's own pending ones, claims due, new entries)."""
        self._prefetch = max_items
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                out = [self._ready.popleft() for _ in range(min(max_items, len(self._ready)))]
                if len(out) < max_items:
                    out += self._reader.read(max_items - len(out))
            if out:
                return out
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return out
            self.wait(remaining)

    def ack(self, *messages: StreamMessage) -> None:
        """XACK and XDEL the entries, in one MULTI/EXEC."""
        if messages:
            self._writer.remove([m.entry_id for m in messages])

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

    def memory_usage(self) -> int:
        """``MEMORY USAGE`` of the stream key (bytes, sampled; 0 when it does not exist)."""
        return int(self._call(lambda: self.client.memory_usage(self.stream)) or 0)

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the next message to hand out: ready here, else the first entry
        after the group's last delivered id. Records pending at other consumers don't count."""
        with self._lock:
            if self._ready:
                return min(m.enqueued_at for m in self._ready)
            try:
                entries = self._call(self._reader.first_new)
            except PermanentError:  # no such key yet
                return None
            return float(entries[0][1].get(b"t", 0.0)) if entries else None

    def flush_mark(self) -> object | None:
        """The newest entry's id now (None when the stream is empty): what ``flush`` waits to
        see settled. Entry ids only grow (Redis never issues one below the last, whatever its
        clock does), so this is a sequence mark, not a time."""

        def newest() -> Any:
            return self.client.xrevrange(self.stream, "+", "-", count=1)

        try:
            last = self._call(newest)
        except PermanentError:  # no such key yet
            return None
        return text(last[0][0]) if last else None

    def settled_through(self, mark: object) -> bool:
        """Whether every entry up to ``mark`` (a :meth:`flush_mark`) was settled by some
        consumer of the group (delivered or dead-lettered): acknowledged entries are deleted,
        so none is left."""
        last = str(mark)
        try:
            left = self._call(lambda: self.client.xrange(self.stream, "-", last, count=1))
        except PermanentError:  # no such key: nothing left
            return True
        return not left

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
        self._reader.leave(held)
        if self._owned:
            self.client.close()


if TYPE_CHECKING:  # mypy checks RedisBackend against the whole contract, member by member

    def _is_a_backend(backend: RedisBackend) -> Backend[StreamMessage]:
        return backend
