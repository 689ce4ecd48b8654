"""The NATS JetStream backend: a spool's queue as a JetStream stream read by a pull consumer.

``Spool(path, sink, backend="nats://host:4222?stream=LOGS")`` keeps the records in a JetStream
stream instead of under ``path`` (which then holds only this host's dead letters). Producers on
any host publish to the stream's subject; workers on any host fetch from one durable pull
consumer with explicit acks, acknowledge a record once its sink returned, and get again what a
dead or stalled consumer held once ``ack_wait`` passed. The stream uses work-queue retention,
so an acknowledged record leaves it: the stream holds only records not acknowledged yet.
Record ids are stream sequence numbers (``"42"``), the same on every host and every
redelivery; a dead letter requeued keeps its id (in a header). Every message fetched is
handed out with JetStream's delivery count, undecodable ones too (as
:class:`~spoolkit.backends.base.Undecodable` items): the spool dead-letters those and the ones
delivered more than ``max_deliveries`` times.

:class:`NatsBackend` is a facade over :mod:`spoolkit.backends.nats_url` (the URL's options,
checked without nats-py), :mod:`.stream` (the connection, on a private event loop thread:
nats-py is asyncio only) and :mod:`.messages` (headers, :class:`JetStreamMessage`); what it
shares with the Redis backend is in :mod:`spoolkit.backends.streams`.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spoolkit._internal.log import get_logger
from spoolkit.backends.base import Backend
from spoolkit.backends.nats_url import check_limits, check_names, number, split_url
from spoolkit.backends.streams import StreamBackend
from spoolkit.errors import ClosedError, ConfigError, SpoolError
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

try:
    import nats  # noqa: F401 - the extra's check comes first, naming it

    from spoolkit._internal.nats_client import nats_secrets, redact_nats_url, servers
    from spoolkit.backends.nats.messages import JetStreamMessage, headers, to_message
    from spoolkit.backends.nats.stream import POLL, JetStream
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the NATS backend needs nats-py: pip install 'spoolkit[nats]'") from exc

__all__ = ["JetStreamMessage", "NatsBackend"]


def default_consumer_name() -> str:
    """The durable consumer every host shares unless told otherwise."""
    return "spoolkit"


class NatsBackend(StreamBackend[JetStreamMessage]):
    """A :class:`~spoolkit.backends.Backend` over one JetStream stream and durable pull consumer.

    Delivery is at least once: a record leaves the stream only when acknowledged (work-queue
    retention). Records a process holds (handed out, nacked, or fetched ahead) are pending at
    the consumer; if the process dies, JetStream delivers them again, to whichever process
    fetches next, once ``ack_wait`` passed. So ``ack_wait`` must exceed the longest a batch is
    held (sink call plus in-place retries), or a slow batch is delivered twice. On
    :meth:`close`, what was fetched ahead is handed back at once (a ``NAK``).

    ``max_deliveries`` is enforced by the spool, not by JetStream's ``max_deliver`` (left
    unlimited): a record delivered more often is put into the spool's dead letters and then
    acknowledged, whereas JetStream would stop delivering it and leave it in the stream for
    good.

    The stream (``subject`` captured, work-queue retention, file storage, ``replicas``) and
    the consumer (explicit acks, ``ack_wait``) are created at the first call if they do not
    exist; existing ones are used as they are. Durability is the server's: ``put_durable``
    returns once JetStream stored the message (on disk as its ``sync_interval`` says).

    Args:
        url: ``nats://host:4222`` (credentials as for :class:`spoolkit.sinks.nats.NatsSink`),
            or several servers separated by commas.
        stream: the stream name.
        subject: the subject records are published to; default ``spoolkit.<stream>``.
        consumer: the durable consumer's name, shared by every host of the spool.
        ack_wait: seconds a delivered record may stay unacknowledged before JetStream
            delivers it again.
        max_deliveries: deliveries after which the spool dead-letters a record instead of
            delivering it (:attr:`max_deliveries`).
        serializer: ``"pickle"``, ``"json"``, ``"raw"`` or a serializer object; every host of
            a stream must use the same one.
        timeout: seconds to wait for the server on each call.
        replicas: the stream's replicas when this backend creates it (a cluster).

    Raises:
        ConfigError: a bad option or URL.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subject: str | None = None,
        consumer: str | None = None,
        ack_wait: float = 60.0,
        max_deliveries: int = 10,
        serializer: str | Serializer = "pickle",
        timeout: float = 10.0,
        replicas: int = 1,
    ) -> None:
        consumer = consumer or default_consumer_name()
        check_names(stream, subject, consumer)
        check_limits(ack_wait, max_deliveries, timeout, replicas)
        self.stream, self.consumer = stream, consumer
        self.subject = subject or f"spoolkit.{stream}"
        self.ack_wait, self._max_deliveries = float(ack_wait), max_deliveries
        self.timeout, self.replicas = float(timeout), replicas
        self._serializer_name, self._serializer = resolve(serializer)
        self._description = f"NatsBackend({redact_nats_url(url)!r}, stream={stream!r})"
        self._log = get_logger(backend=self._description, consumer=consumer)
        self._closed = threading.Event()
        self._stream = JetStream(
            servers(url),
            stream=stream,
            subject=self.subject,
            consumer=consumer,
            ack_wait=self.ack_wait,
            timeout=self.timeout,
            replicas=replicas,
            secrets=nats_secrets(url),
            description=self._description,
            closed=self._closed,
        )
        self._call = self._stream.call
        self._lock = threading.Lock()  # _ready (held briefly, never across a call)
        self._fetching = threading.Lock()  # one fetch at a time, until its messages are in _ready
        self._ready: collections.deque[JetStreamMessage] = collections.deque()
        self._prefetch = 100
        self._backlog = 0
        self._init_counters()
        self.host = socket.gethostname()

    @classmethod
    def from_url(cls, url: str, *, serializer: str | Serializer = "pickle") -> NatsBackend:
        """``nats://[user:pass@]host[:port]?stream=S[&subject=X&consumer=C&ack_wait=60&...]``.

        The query takes the constructor's options: ``stream`` (required), ``subject``,
        ``consumer``, ``ack_wait``, ``max_deliveries``, ``serializer``, ``timeout``,
        ``replicas``.

        Raises:
            ConfigError: ``stream`` missing, an unknown or bad option.
        """
        servers, options = split_url(url)
        return cls(
            servers,
            stream=options["stream"],
            subject=options.get("subject") or None,
            consumer=options.get("consumer") or None,
            ack_wait=number(options, "ack_wait", float, 60.0),
            max_deliveries=number(options, "max_deliveries", int, 10),
            serializer=options.get("serializer", serializer),
            timeout=number(options, "timeout", float, 10.0),
            replicas=number(options, "replicas", int, 1),
        )

    def __repr__(self) -> str:
        return self._description

    @property
    def uid(self) -> str:
        """``"nats-stream:<stream>"`` (record ids are bare sequence numbers)."""
        return f"nats-stream:{self.stream}"

    # -- putting -----------------------------------------------------------------------------

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """Publish ``item`` (one acknowledged publish). A stream is never full here.

        Raises:
            TransientError: the server is unreachable or JetStream unavailable.
        """
        self.put_durable(item, block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Publish ``item`` and return its record id, once JetStream stored it."""
        payload = self.encode(item)
        (seq,) = self._call(lambda: self._stream.publish([payload], [headers(time.time())]))
        self._stored(1)
        return str(seq)

    def put_many(self, items: Iterable[Any]) -> None:
        """Serialize every item, then publish them in order (1000 in flight at a time)."""
        payloads = [self.encode(item) for item in items]
        if not payloads:
            return
        stamp = headers(time.time())
        self._call(
            lambda: self._stream.publish(payloads, [stamp] * len(payloads)), self.timeout * 4
        )
        self._stored(len(payloads))

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Publish a requeued dead letter as a new message that keeps ``record_id``.

        Raises:
            ConfigError: ``record_id`` is not a stream sequence number.
        """
        if not record_id.isdigit():
            raise ConfigError(f"record id {record_id!r} was not issued by {self._description}")
        found = headers(enqueued_at, record_id)
        self._call(lambda: self._stream.publish([payload], [found]))

    # -- taking ------------------------------------------------------------------------------

    def _read(self, n: int, wait: float) -> list[JetStreamMessage]:
        """Fetch up to ``n`` messages (waiting up to ``wait`` s for the first)."""
        raw = self._call(lambda: self._stream.pull(n, wait), wait + self.timeout)
        return [to_message(m, self._item) for m in raw]

    def _fetch(self, n: int, wait: float) -> bool:
        """Fetch into ``_ready`` (one fetch at a time; ``_ready`` is free meanwhile); True when
        something is ready."""
        with self._fetching:
            if self._closed.is_set():
                raise ClosedError(f"{self._description} is closed")
            got = self._read(n, wait)
            with self._lock:
                self._ready.extend(got)
                return bool(self._ready)

    def wait(self, timeout: float | None) -> bool:
        """Wait until a message is ready here, fetching it from JetStream.

        Fetches happen ahead of ``get_batch``: what was fetched is pending at the consumer.
        While the server is unreachable, tries again every 0.1 to 2 s (logged) until
        ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = 0.1
        while True:
            try:
                with self._lock:
                    if self._ready:
                        return True
                remaining = POLL if deadline is None else deadline - time.monotonic()
                if self._fetch(self._prefetch, min(max(remaining, 0), POLL)):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                backoff = 0.1
            except ClosedError:
                raise
            except SpoolError as exc:
                if self._closed.is_set():
                    raise ClosedError(f"{self._description} is closed") from None
                self._log.warning("nats_read_failed", error=repr(exc), retry_in=backoff)
                if deadline is not None and time.monotonic() + backoff > deadline:
                    raise
                if self._closed.wait(backoff):
                    raise ClosedError(f"{self._description} is closed") from None
                backoff = min(2.0, backoff * 2)

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[JetStreamMessage]:
        """Hand out up to ``max_items`` messages: nacked ones first, then fetched ones."""
        self._prefetch = max_items
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                out = [self._ready.popleft() for _ in range(min(max_items, len(self._ready)))]
            if out:
                return out
            if self._fetch(max_items, 0):
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return out
            self.wait(remaining)

    def ack(self, *messages: JetStreamMessage) -> None:
        """Acknowledge the messages and wait until the server has the acks (JetStream then
        removes them from the stream, moments later: ``settled_through`` waits for that)."""
        if messages:
            self._call(lambda: self._stream.ack([m.msg for m in messages]))

    # -- gauges ------------------------------------------------------------------------------

    def waiting(self) -> int:
        """Messages no consumer was handed yet (the consumer's ``num_pending``), plus those
        ready here."""
        _, consumer = self._call(self._stream.info)
        with self._lock:
            return int(consumer.num_pending or 0) + len(self._ready)

    def backlog(self) -> int:
        """Messages in the stream: acknowledged ones leave it, so each is waiting or pending.

        After :meth:`close`, the last value read.
        """
        if not self._closed.is_set():
            stream, _ = self._call(self._stream.info)
            self._backlog = int(stream.state.messages)
        return self._backlog

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the next message to hand out: ready here, else the first message
        the consumer has not delivered yet. Records pending at other processes don't count."""
        with self._lock:
            if self._ready:
                return min(m.enqueued_at for m in self._ready)
        return self._call(self._stream.next_enqueued_at)

    def flush_mark(self) -> object | None:
        """The newest message's sequence now (None when the stream is empty): what ``flush``
        waits to see settled. Sequences only grow."""
        stream, _ = self._call(self._stream.info)
        return int(stream.state.last_seq) if stream.state.messages else None

    def settled_through(self, mark: object) -> bool:
        """Whether every message up to ``mark`` (a :meth:`flush_mark`) was settled by some
        consumer (delivered or dead-lettered): acknowledged messages leave a work-queue
        stream, so none is left."""
        last = int(str(mark))
        stream, _ = self._call(self._stream.info)
        return not stream.state.messages or int(stream.state.first_seq) > last

    def close(self) -> None:
        """Hand the messages fetched ahead back to JetStream at once (``NAK``), then close.

        That includes messages that arrived after their fetch stopped waiting (see
        :meth:`spoolkit.backends.nats.stream.JetStream.close`). Messages a worker still
        holds stay pending, delivered again after ``ack_wait``.
        """
        if self._closed.is_set():
            return
        self._closed.set()  # no new call starts
        with self._fetching, self._lock:  # a fetch in flight (at most POLL s) puts its messages
            held = [m.msg for m in self._ready]  # in _ready first: handed back with the rest
            self._ready.clear()
        self._stream.close(held)


if TYPE_CHECKING:  # mypy checks NatsBackend against the whole contract, member by member

    def _is_a_backend(backend: NatsBackend) -> Backend[JetStreamMessage]:
        return backend
