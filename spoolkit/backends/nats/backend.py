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

nats-py is asyncio only: the backend runs its client on a private event loop thread
(``EventLoopThread``), and its methods, called from the spool's threads, wait for the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from spoolkit._internal.log import get_logger
from spoolkit.backends.base import Backend
from spoolkit.backends.codec import StreamBackend
from spoolkit.backends.nats_url import check_limits, check_names, number, split_url
from spoolkit.errors import ClosedError, ConfigError, SpoolError
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import api

    from spoolkit._internal.nats_client import (
        EventLoopThread,
        connect,
        map_nats_error,
        nats_secrets,
        redact_nats_url,
        servers,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the NATS backend needs nats-py: pip install 'spoolkit[nats]'") from exc

__all__ = ["JetStreamMessage", "NatsBackend"]

T = TypeVar("T")

_POLL = 0.2  # the longest one fetch waits, so close() is noticed soon
_LATENCY = 0.05  # how much later than here a pull request expires at the server, at most
_ENQUEUED = "Spoolkit-Enqueued-At"
_RECORD = "Spoolkit-Record-Id"
_CHUNK = 1000  # publishes in flight at once in put_many


@dataclass(slots=True, eq=False)
class JetStreamMessage:
    """One delivery of a stream message (what ``get_batch`` hands out).

    Attributes:
        seq: the stream sequence number.
        record_id: ``str(seq)``, or for a requeued dead letter the id it had first.
        item: the decoded item (an :class:`~spoolkit.backends.base.Undecodable` when it
            could not be decoded).
        enqueued_at: when it was first put (epoch seconds).
        deliveries: JetStream's delivery count (1 on its first delivery).
        msg: the nats-py message (what is acknowledged).
    """

    seq: int
    record_id: str
    item: Any
    enqueued_at: float
    deliveries: int
    msg: Msg


async def _exists(info: Awaitable[Any]) -> bool:
    """Whether a JetStream ``*_info`` call finds what it asks about."""
    try:
        await info
    except nats.js.errors.NotFoundError:
        return False
    return True


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
        self._servers = servers(url)
        self.stream, self.consumer = stream, consumer
        self.subject = subject or f"spoolkit.{stream}"
        self.ack_wait, self._max_deliveries = float(ack_wait), max_deliveries
        self.timeout, self.replicas = float(timeout), replicas
        self._serializer_name, self._serializer = resolve(serializer)
        self._secrets = nats_secrets(url)
        self._description = f"NatsBackend({redact_nats_url(url)!r}, stream={stream!r})"
        self._log = get_logger(backend=self._description, consumer=consumer)
        self._loop = EventLoopThread("spoolkit-nats-backend")
        self._nc: Client | None = None
        self._psub: Any = None
        self._connect_lock: asyncio.Lock | None = None
        self._lock = threading.Lock()  # _ready (held briefly, never across a call)
        self._fetching = threading.Lock()  # one fetch at a time, until its messages are in _ready
        self._ready: collections.deque[JetStreamMessage] = collections.deque()
        self._closed = threading.Event()
        self._prefetch = 100
        self._requests_end = 0.0  # (monotonic) when the last pull request ends at the server
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

    # -- calls on the loop -------------------------------------------------------------------

    def _call(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``make()`` on the loop; map nats-py errors to TransientError/PermanentError."""
        if self._closed.is_set():
            raise ClosedError(f"{self._description} is closed")
        try:
            return self._loop.call(make, (timeout or self.timeout) * 2 + 5)
        except SpoolError:
            raise
        except Exception as exc:
            if self._closed.is_set():
                raise ClosedError(f"{self._description} is closed") from exc
            raise map_nats_error(exc, self._description, self._secrets) from exc

    async def _client(self) -> Client:
        """The connection, made (and the stream and consumer ensured) when needed."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            nc = self._nc
            if nc is None or nc.is_closed:
                nc = await asyncio.wait_for(connect(self._servers, self.timeout), self.timeout + 1)
                try:
                    await self._ensure(nc)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    raise
                self._nc, self._psub = nc, None
            return nc

    async def _ensure(self, nc: Client) -> None:
        js = nc.jetstream(timeout=self.timeout)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(
                    name=self.stream,
                    subjects=[self.subject],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=api.StorageType.FILE,
                    num_replicas=self.replicas,
                )
            except nats.js.errors.BadRequestError:
                if not await _exists(js.stream_info(self.stream)):  # not made by another host
                    raise  # it says why: the subject overlaps another stream's, say
        try:
            await js.consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            config = api.ConsumerConfig(
                durable_name=self.consumer,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,  # max_deliveries is the spool's (see the class docstring)
                deliver_policy=api.DeliverPolicy.ALL,
                filter_subject=self.subject,
                max_ack_pending=-1,
            )
            with contextlib.suppress(nats.js.errors.BadRequestError):  # made by another host
                await js.add_consumer(self.stream, config)

    async def _subscription(self) -> Any:
        nc = await self._client()
        if self._psub is None:
            js = nc.jetstream(timeout=self.timeout)
            self._psub = await js.pull_subscribe_bind(
                durable=self.consumer, stream=self.stream, inbox_prefix=nc.new_inbox().encode()
            )
        return self._psub

    @property
    def uid(self) -> str:
        """``"nats-stream:<stream>"`` (record ids are bare sequence numbers)."""
        return f"nats-stream:{self.stream}"

    # -- putting -----------------------------------------------------------------------------

    async def _publish(
        self, payloads: Sequence[bytes], headers: Sequence[dict[str, str]]
    ) -> list[int]:
        nc = await self._client()
        js = nc.jetstream(timeout=self.timeout)
        seqs: list[int] = []
        for start in range(0, len(payloads), _CHUNK):
            acks = await asyncio.gather(
                *(
                    js.publish(self.subject, p, stream=self.stream, headers=h)
                    for p, h in zip(
                        payloads[start : start + _CHUNK],
                        headers[start : start + _CHUNK],
                        strict=True,
                    )
                )
            )
            seqs += [int(a.seq) for a in acks]
        return seqs

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """Publish ``item`` (one acknowledged publish). A stream is never full here.

        Raises:
            TransientError: the server is unreachable or JetStream unavailable.
        """
        self.put_durable(item, block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Publish ``item`` and return its record id, once JetStream stored it."""
        payload = self.encode(item)
        headers = {_ENQUEUED: repr(time.time())}
        (seq,) = self._call(lambda: self._publish([payload], [headers]))
        self._stored(1)
        return str(seq)

    def put_many(self, items: Iterable[Any]) -> None:
        """Serialize every item, then publish them in order (1000 in flight at a time)."""
        payloads = [self.encode(item) for item in items]
        if not payloads:
            return
        stamp = repr(time.time())
        headers = [{_ENQUEUED: stamp} for _ in payloads]
        self._call(lambda: self._publish(payloads, headers), self.timeout * 4)
        self._stored(len(payloads))

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Publish a requeued dead letter as a new message that keeps ``record_id``.

        Raises:
            ConfigError: ``record_id`` is not a stream sequence number.
        """
        if not record_id.isdigit():
            raise ConfigError(f"record id {record_id!r} was not issued by {self._description}")
        headers = {_ENQUEUED: repr(enqueued_at), _RECORD: record_id}
        self._call(lambda: self._publish([payload], [headers]))

    # -- taking ------------------------------------------------------------------------------

    async def _pull(self, n: int, wait: float) -> list[Msg]:
        psub = await self._subscription()
        wait = max(wait, 0.01)
        self._requests_end = max(self._requests_end, time.monotonic() + wait + _LATENCY)
        try:
            msgs: list[Msg] = await psub.fetch(n, timeout=wait)
        except TimeoutError:  # nothing came (nats-py's TimeoutError is one too)
            return []
        return msgs

    def _read(self, n: int, wait: float) -> list[JetStreamMessage]:
        """Fetch up to ``n`` messages (waiting up to ``wait`` s for the first)."""
        raw = self._call(lambda: self._pull(n, wait), wait + self.timeout)
        return [self._message(m) for m in raw]

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

    def _message(self, msg: Msg) -> JetStreamMessage:
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        headers = msg.headers or {}
        return JetStreamMessage(
            seq,
            headers.get(_RECORD, str(seq)),
            self._item(msg.data, {"data": msg.data, "headers": headers}),
            float(headers.get(_ENQUEUED, 0.0)),
            int(meta.num_delivered),
            msg,
        )

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
                remaining = _POLL if deadline is None else deadline - time.monotonic()
                if self._fetch(self._prefetch, min(max(remaining, 0), _POLL)):
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
        if not messages:
            return

        async def ack_all() -> None:
            # one round trip for the batch: the acks, then a PING whose PONG says the server
            # read them (it handles a connection's messages in order); an ack lost with the
            # connection means a redelivery, never a loss
            nc = await self._client()
            for m in messages:
                await m.msg.ack()
            await nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # int in its hints

        self._call(ack_all)

    # -- gauges ------------------------------------------------------------------------------

    async def _info(self) -> tuple[Any, Any]:
        nc = await self._client()
        js = nc.jetstream(timeout=self.timeout)
        return await js.stream_info(self.stream), await js.consumer_info(self.stream, self.consumer)

    def waiting(self) -> int:
        """Messages no consumer was handed yet (the consumer's ``num_pending``), plus those
        ready here."""
        _, consumer = self._call(self._info)
        with self._lock:
            return int(consumer.num_pending or 0) + len(self._ready)

    def backlog(self) -> int:
        """Messages in the stream: acknowledged ones leave it, so each is waiting or pending.

        After :meth:`close`, the last value read.
        """
        if not self._closed.is_set():
            stream, _ = self._call(self._info)
            self._backlog = int(stream.state.messages)
        return self._backlog

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the next message to hand out: ready here, else the first message
        the consumer has not delivered yet. Records pending at other processes don't count."""
        with self._lock:
            if self._ready:
                return min(m.enqueued_at for m in self._ready)

        async def next_new() -> float | None:
            nc = await self._client()
            js = nc.jetstream(timeout=self.timeout)
            consumer = await js.consumer_info(self.stream, self.consumer)
            if not consumer.num_pending:
                return None
            seq = int(consumer.delivered.stream_seq or 0) + 1
            try:
                msg = await js.get_msg(self.stream, seq)
            except nats.js.errors.NotFoundError:
                return None
            return float((msg.headers or {}).get(_ENQUEUED, 0.0))

        return self._call(next_new)

    def flush_mark(self) -> object | None:
        """The newest message's sequence now (None when the stream is empty): what ``flush``
        waits to see settled. Sequences only grow."""
        stream, _ = self._call(self._info)
        return int(stream.state.last_seq) if stream.state.messages else None

    def settled_through(self, mark: object) -> bool:
        """Whether every message up to ``mark`` (a :meth:`flush_mark`) was settled by some
        consumer (delivered or dead-lettered): acknowledged messages leave a work-queue
        stream, so none is left."""
        last = int(str(mark))
        stream, _ = self._call(self._info)
        return not stream.state.messages or int(stream.state.first_seq) > last

    def close(self) -> None:
        """Hand the messages fetched ahead back to JetStream at once (``NAK``), then close.

        That includes messages the server sent after their fetch stopped waiting (they wait
        in the pull subscription's queue): close first waits until the last pull request
        ended at the server (at most ``_POLL`` s after the last fetch), so none is still
        being answered. Messages a worker still holds stay pending, delivered again after
        ``ack_wait``.
        """
        if self._closed.is_set():
            return
        self._closed.set()  # no new call starts
        with self._fetching, self._lock:  # a fetch in flight (at most _POLL s) puts its messages
            held = [m.msg for m in self._ready]  # in _ready first: handed back with the rest
            self._ready.clear()
        quiet_in = min(self._requests_end - time.monotonic(), _POLL + _LATENCY)

        async def shut() -> None:
            if quiet_in > 0:
                await asyncio.sleep(quiet_in)
            late = await self._late_arrivals()
            with contextlib.suppress(Exception):
                await asyncio.gather(*(m.nak() for m in held + late))
            nc, self._nc = self._nc, None
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()  # flushes the NAKs

        with contextlib.suppress(Exception):
            self._loop.call(shut, self.timeout + 5)
        self._loop.stop()

    async def _late_arrivals(self) -> list[Msg]:
        """The messages waiting in the pull subscription's queue (answers to pull requests
        that came after their fetch returned), once everything the server sent is here.

        nats-py hands these to the next fetch; at close there is none, so they are taken
        from the subscription itself (``PullSubscription`` offers no public way).
        """
        nc, psub = self._nc, self._psub
        if nc is None or nc.is_closed or psub is None:
            return []
        late: list[Msg] = []
        with contextlib.suppress(Exception):
            await nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # int in its hints
            sub = psub._sub
            while psub.pending_msgs:
                msg = await sub.next_msg(timeout=self.timeout)
                if msg.reply and not (msg.headers or {}).get("Status"):  # not a status line
                    late.append(msg)
        return late


if TYPE_CHECKING:  # mypy checks NatsBackend against the whole contract, member by member

    def _is_a_backend(backend: NatsBackend) -> Backend[JetStreamMessage]:
        return backend
