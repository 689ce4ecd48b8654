"""One process's connection to a JetStream stream and its durable pull consumer.

nats-py is asyncio only; the spool's workers are threads. :class:`JetStream` runs the client
on a private event loop thread (``EventLoopThread``): :meth:`JetStream.call` runs a coroutine
there and waits for it, mapping nats-py's errors to spoolkit's. The coroutines below
(``publish``, ``pull``, ``ack``, ``info``...) are what the backend runs through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from spoolkit._internal.nats_client import EventLoopThread, connect, map_nats_error
from spoolkit.backends.nats.messages import enqueued_at
from spoolkit.errors import ClosedError, SpoolError

__all__ = ["POLL", "JetStream"]

T = TypeVar("T")

POLL = 0.2  # the longest one fetch waits, so close() is noticed soon
_LATENCY = 0.05  # how much later than here a pull request expires at the server, at most
_CHUNK = 1000  # publishes in flight at once


async def _exists(info: Awaitable[Any]) -> bool:
    """Whether a JetStream ``*_info`` call finds what it asks about."""
    try:
        await info
    except nats.js.errors.NotFoundError:
        return False
    return True


class JetStream:
    """The client, the stream and the consumer of one :class:`NatsBackend`.

    The stream (``subject`` captured, work-queue retention, file storage, ``replicas``) and
    the consumer (explicit acks, ``ack_wait``, no ``max_deliver``) are created at the first
    call if they do not exist; existing ones are used as they are. After a lost connection,
    the next call connects again.

    Args:
        servers: the server URLs.
        stream: the stream name.
        subject: the subject records are published to.
        consumer: the durable consumer's name.
        ack_wait: seconds a delivered record may stay unacknowledged.
        timeout: seconds to wait for the server on each call.
        replicas: the stream's replicas when it is created here.
        secrets: values errors must not show.
        description: the backend's redacted description, named in errors.
        closed: set once the backend is closed: no call starts then.
    """

    def __init__(
        self,
        servers: list[str],
        *,
        stream: str,
        subject: str,
        consumer: str,
        ack_wait: float,
        timeout: float,
        replicas: int,
        secrets: Sequence[str],
        description: str,
        closed: threading.Event,
    ) -> None:
        self.servers, self.stream, self.subject, self.consumer = servers, stream, subject, consumer
        self.ack_wait, self.timeout, self.replicas = ack_wait, timeout, replicas
        self._secrets, self._description, self._closed = secrets, description, closed
        self._loop = EventLoopThread("spoolkit-nats-backend")
        self._nc: Client | None = None
        self.psub: Any = None  # the pull subscription, made at the first pull
        self._connect_lock: asyncio.Lock | None = None
        self._requests_end = 0.0  # (monotonic) when the last pull request ends at the server

    def call(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``make()`` on the loop and return its result.

        Raises:
            ClosedError: the backend is closed.
            TransientError: the server is unreachable, JetStream unavailable, a timeout.
            PermanentError: JetStream refused (a subject another stream captures, say).
        """
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

    # -- on the loop -------------------------------------------------------------------------

    async def client(self) -> Client:
        """The connection, made (and the stream and consumer ensured) when needed."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            nc = self._nc
            if nc is None or nc.is_closed:
                nc = await asyncio.wait_for(connect(self.servers, self.timeout), self.timeout + 1)
                try:
                    await self._ensure(nc)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    raise
                self._nc, self.psub = nc, None
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
                max_deliver=-1,  # max_deliveries is the spool's: it dead-letters, then acks
                deliver_policy=api.DeliverPolicy.ALL,
                filter_subject=self.subject,
                max_ack_pending=-1,
            )
            with contextlib.suppress(nats.js.errors.BadRequestError):  # made by another host
                await js.add_consumer(self.stream, config)

    async def publish(
        self, payloads: Sequence[bytes], headers: Sequence[dict[str, str]]
    ) -> list[int]:
        """Publish in order (1000 in flight at a time); the stream sequence of each."""
        nc = await self.client()
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

    async def pull(self, n: int, wait: float) -> list[Msg]:
        """Fetch up to ``n`` messages, waiting up to ``wait`` s for the first."""
        nc = await self.client()
        if self.psub is None:
            js = nc.jetstream(timeout=self.timeout)
            self.psub = await js.pull_subscribe_bind(
                durable=self.consumer, stream=self.stream, inbox_prefix=nc.new_inbox().encode()
            )
        wait = max(wait, 0.01)
        self._requests_end = max(self._requests_end, time.monotonic() + wait + _LATENCY)
        try:
            msgs: list[Msg] = await self.psub.fetch(n, timeout=wait)
        except TimeoutError:  # nothing came (nats-py's TimeoutError is one too)
            return []
        return msgs

    async def ack(self, msgs: Sequence[Msg]) -> None:
        """Acknowledge, then wait until the server has the acks.

        One round trip for the batch: the acks, then a PING whose PONG says the server read
        them (it handles a connection's messages in order). An ack lost with the connection
        means a redelivery, never a loss.
        """
        nc = await self.client()
        for m in msgs:
            await m.ack()
        await nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # int in its hints

    async def info(self) -> tuple[Any, Any]:
        """The stream's and the consumer's info."""
        nc = await self.client()
        js = nc.jetstream(timeout=self.timeout)
        return await js.stream_info(self.stream), await js.consumer_info(self.stream, self.consumer)

    async def next_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the first message the consumer has not delivered yet, or None."""
        nc = await self.client()
        js = nc.jetstream(timeout=self.timeout)
        consumer = await js.consumer_info(self.stream, self.consumer)
        if not consumer.num_pending:
            return None
        seq = int(consumer.delivered.stream_seq or 0) + 1
        try:
            msg = await js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        return enqueued_at(msg.headers)

    # -- closing -----------------------------------------------------------------------------

    def close(self, held: list[Msg]) -> None:
        """Hand ``held`` back (``NAK``) with what arrived after its fetch stopped waiting,
        then close the connection and the loop.

        Messages the server sends in answer to a pull request after its fetch gave up (the
        client's timeout and the request's expiry at the server race) wait in the pull
        subscription's queue for the next fetch; at close there is none. So this first
        waits until the last pull request ended at the server (at most ``POLL`` s after
        the last fetch), so none is still being answered, then hands those back too.
        Call it with no fetch in flight.
        """
        quiet_in = min(self._requests_end - time.monotonic(), POLL + _LATENCY)

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
        """The messages waiting in the pull subscription's queue, once everything the server
        sent is here (nats-py's ``PullSubscription`` offers no public way to take them)."""
        nc, psub = self._nc, self.psub
        if nc is None or nc.is_closed or psub is None:
            return []
        late: list[Msg] = []
        with contextlib.suppress(Exception):
            await nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # int in its hints
            sub = psub._sub  # private: see the docstring
            while psub.pending_msgs:
                msg = await sub.next_msg(timeout=self.timeout)
                if msg.reply and not (msg.headers or {}).get("Status"):  # not a status line
                    late.append(msg)
        return late
