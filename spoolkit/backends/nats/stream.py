"""One process's connection to a JetStream stream and its durable pull consumer.

nats-py is asyncio only; the spool's workers are threads. :class:`JetStream` runs the client
on a private event loop thread (``EventLoopThread``): :meth:`JetStream.call` runs a coroutine
there and waits for it, mapping nats-py's errors to spoolkit's. The coroutines below
(``publish``, ``pull``, ``ack``, ``info``...) are what the backend runs through it.

Pull requests are sent here rather than through nats-py's ``PullSubscription.fetch``, so that
every fetch waits until the server ended its requests (a batch filled, or a status line:
``404``, ``408``...). A request left open when its fetch stopped waiting would be answered
later into a process that may not fetch again soon (an idle or stopping consumer), and the
messages it got would wait there for ``ack_wait`` while other consumers could deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
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
        self.inbox: Any = None  # the subscription pull requests are answered on
        self._prefix = ""  # its subject, less the request number
        self._numbers = itertools.count(1)
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._connect_lock: asyncio.Lock | None = None
        self._requests_end = 0.0  # (monotonic) when a request left open ends at the server

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
                self._nc, self.inbox = nc, None
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
        """Fetch up to ``n`` messages, waiting up to ``wait`` s for the first.

        What waits is taken at once (a ``no_wait`` request); if nothing did, a ``no_wait``
        request with ``expires`` waits up to ``wait`` for messages, and the server ends it
        once it delivered some. Each request is over at the server when this returns.
        """
        nc = await self.client()
        if self.inbox is None:
            self._prefix = nc.new_inbox()
            self.inbox = await nc.subscribe(self._prefix + ".*")
        got = await self._queued(n)  # answers that came after their request gave up
        if not got:
            got = await self._request(nc, n, None)
        if not got and wait > 0.01:
            got = await self._request(nc, n, wait)
        return got

    async def _request(self, nc: Client, n: int, wait: float | None) -> list[Msg]:
        """Ask for up to ``n`` messages, those waiting now or (``wait``) the first to come
        within ``wait`` s; take them until the server ends the request."""
        reply = f"{self._prefix}.{next(self._numbers)}"
        ask: dict[str, Any] = {"batch": n, "no_wait": True}
        if wait is not None:
            ask["expires"] = int(wait * 1e9)
        await nc.publish(self._next, json.dumps(ask).encode(), reply=reply)
        ends = time.monotonic() + (wait or 0.0)
        got: list[Msg] = []
        while len(got) < n:
            remaining = ends + self.timeout - time.monotonic()
            try:
                msg = await self.inbox.next_msg(timeout=max(remaining, 0.001))
            except TimeoutError:  # no end from the server: whatever it sends later is queued
                self._requests_end = max(self._requests_end, ends + _LATENCY)
                break
            status = (msg.headers or {}).get("Status")
            if not status:
                got.append(msg)
            elif msg.subject == reply and status != "100":  # the server ended this request
                if status not in ("404", "408", "409"):  # not "none", "expired", "busy"
                    raise nats.js.errors.APIError.from_msg(msg)
                if status == "409":  # refused now (too many requests waiting, a new leader):
                    await asyncio.sleep(max(0.0, ends - time.monotonic()))  # not at once again
                break
        return got

    async def _queued(self, n: int) -> list[Msg]:
        """Up to ``n`` messages already waiting on the inbox (status lines are dropped)."""
        got: list[Msg] = []
        while len(got) < n and self.inbox.pending_msgs:
            msg = await self.inbox.next_msg(timeout=self.timeout)
            if not (msg.headers or {}).get("Status"):
                got.append(msg)
        return got

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

        A request whose end did not come in time (see :meth:`pull`) may still be answered:
        those answers wait on the inbox for the next fetch, and at close there is none. So
        this first waits until such a request ended at the server (at most ``POLL`` s
        after the last fetch), then hands back what came. Call it with no fetch in flight.
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
        """The messages waiting on the inbox, once everything the server sent is here."""
        nc = self._nc
        if nc is None or nc.is_closed or self.inbox is None:
            return []
        with contextlib.suppress(Exception):
            await nc.flush(timeout=self.timeout)  # type: ignore[arg-type]  # int in its hints
            return await self._queued(self.inbox.pending_msgs)
        return []
