"""Reading a Redis stream as one consumer of a consumer group.

A read takes, in order: this consumer's own pending history (once, after a restart), entries
left pending by a dead consumer for ``claim_idle`` seconds (``XAUTOCLAIM``, in rounds at most
``claim_every`` apart), then new entries (``XREADGROUP >``). Redelivered entries get their
delivery count from ``XPENDING``; what was read is screened (see :mod:`._screen`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import redis

from spoolkit.backends.redis.entries import RedisCall, StreamMessage, text, to_message
from spoolkit.backends.screen import screen
from spoolkit.deadletter import DeadLetters

__all__ = ["GroupReader"]

_record_id = attrgetter("record_id")


class GroupReader:
    """One consumer's reads from a stream's consumer group, and what it keeps between them.

    Args:
        client: the backend's client.
        stream: the stream key.
        group: the consumer group (created at the first read, from the stream's start).
        consumer: this consumer's name in the group.
        claim_idle: seconds a pending entry must sit idle before it is claimed.
        max_deliveries: deliveries after which a record is dead-lettered, not handed out.
        call: runs each Redis call, mapping redis-py errors.
        decode: deserializes an entry's payload.
        encode: serializes an item (for its dead letter).
        ack: acknowledges messages.
        log: the backend's logger.
        sink: the backend's description (named in dead letters' errors).

    Attributes:
        dead: where screened-out records go (``RedisBackend.bind_dead_letters``), or None.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        claim_idle: float,
        max_deliveries: int,
        call: RedisCall,
        decode: Callable[[bytes], Any],
        encode: Callable[[Any], bytes],
        ack: Callable[..., None],
        log: Any,
        sink: str,
    ) -> None:
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.claim_idle, self.max_deliveries = claim_idle, max_deliveries
        self._call, self._decode, self._encode, self._ack = call, decode, encode, ack
        self._log, self._sink = log, sink
        self.dead: DeadLetters | None = None
        self.dead_lettered = 0  # records screened into the dead letters
        self.group_ready = False
        self.claim_every = min(claim_idle / 2, 5.0)
        self._history_read = False
        self._claim_cursor = "0-0"
        self._next_claim = float("-inf")

    def ensure_group(self) -> None:
        """Create the group from the stream's start (and the stream) unless it exists."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.group_ready = True

    def block(self, seconds: float) -> None:
        """Block until an entry newer than the newest one delivered arrives, or ``seconds``."""

        def newest() -> Any:
            return self.client.xrevrange(self.stream, "+", "-", count=1)

        last = self._call(newest)
        start = text(last[0][0]) if last else "0-0"
        ms = max(1, int(seconds * 1000))
        self._call(lambda: self.client.xread({self.stream: start}, count=1, block=ms))

    def first_new(self) -> Any:
        """The first entry after the group's last delivered id, as ``XRANGE`` returns it.

        A raw call: run it through ``call``.
        """
        groups = self.client.xinfo_groups(self.stream)
        last = next((g for g in groups if text(g["name"]) == self.group), None)
        start = "-" if last is None else "(" + text(last["last-delivered-id"])
        return self.client.xrange(self.stream, start, "+", count=1)

    def leave(self, held: list[Any]) -> None:
        """Make the ``held`` entry ids claimable at once; leave the group if nothing is pending.

        Errors from Redis are ignored: whatever stays pending is claimed after ``claim_idle``.
        """
        with contextlib.suppress(redis.RedisError):
            if held:  # idle long enough for the next XAUTOCLAIM; JUSTID: count unchanged
                idle = int(self.claim_idle * 1000) + 1
                self.client.xclaim(
                    self.stream, self.group, self.consumer, 0, held, idle=idle, justid=True
                )
            if self.group_ready and not self.client.xpending_range(
                self.stream, self.group, "-", "+", 1, self.consumer
            ):
                self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)

    def read(self, count: int) -> list[StreamMessage]:
        """This consumer's own pending history (once, first), claims due, then new entries.

        Records over ``max_deliveries`` or undecodable are dead-lettered, not returned.
        """
        got: list[StreamMessage] = []
        if not self._history_read:
            got += self._group_read("0", count)
            self._history_read = len(got) < count  # the rest next time
        if len(got) < count:
            got += self._claim(count - len(got))
        if len(got) < count:
            got += self._group_read(">", count - len(got))
        rest, dead_lettered = screen(
            got,
            max_deliveries=self.max_deliveries,
            dead=self.dead,
            encode=self._encode,
            ack=self._ack,
            log=self._log,
            sink=self._sink,
            record_id=_record_id,
        )
        self.dead_lettered += dead_lettered
        return rest

    def _group_read(self, start: str, count: int) -> list[StreamMessage]:
        def read() -> Any:
            if not self.group_ready:
                self.ensure_group()
            try:
                return self.client.xreadgroup(
                    self.group, self.consumer, {self.stream: start}, count=count
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()  # the stream or group was deleted: start over
                return []

        reply = self._call(read)
        entries = reply[0][1] if reply else []
        gone = [e for e, f in entries if not f]  # history of entries trimmed away meanwhile
        if gone:
            self._call(lambda: self.client.xack(self.stream, self.group, *gone))
        msgs = [to_message(e, f, 1, self._decode) for e, f in entries if f]
        if start != ">" and msgs:
            self._count_deliveries(msgs)
        return msgs

    def _claim(self, count: int) -> list[StreamMessage]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        if not self.group_ready:
            self._call(self.ensure_group)
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
        self._claim_cursor = text(reply[0])
        if self._claim_cursor == "0-0":  # scanned to the end: rest until the next round
            self._next_claim = now + self.claim_every
        msgs = [to_message(e, f, 1, self._decode) for e, f in reply[1] if f]
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
