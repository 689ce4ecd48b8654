"""Reading a Redis stream as one consumer of a consumer group.

A read takes, in order: this consumer's own pending history (once, after a restart), entries
left pending by a dead consumer for ``claim_idle`` seconds (``XAUTOCLAIM``, in rounds at most
``claim_every`` apart), then new entries (``XREADGROUP >``). Redelivered entries get their
delivery count from ``XPENDING``. Everything read is handed out, undecodable entries and
entries over ``max_deliveries`` included: the spool decides what to dead-letter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import redis

from spoolkit.backends.redis.entries import RedisCall, StreamMessage, text, to_message

__all__ = ["GroupReader"]


class GroupReader:
    """One consumer's reads from a stream's consumer group, and what it keeps between them.

    Args:
        client: the backend's client.
        stream: the stream key.
        group: the consumer group (created at the first read, from the stream's start).
        consumer: this consumer's name in the group.
        claim_idle: seconds a pending entry must sit idle before it is claimed.
        call: runs each Redis call, mapping redis-py errors.
        item: decodes an entry's payload given its raw fields (``StreamBackend._item``).
        log: the backend's logger.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        claim_idle: float,
        call: RedisCall,
        item: Callable[[bytes | None, Any], Any],
        log: Any,
    ) -> None:
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.claim_idle = claim_idle
        self._call, self._item, self._log = call, item, log
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
        """This consumer's own pending history (once, first), claims due, then new entries."""
        got: list[StreamMessage] = []
        if not self._history_read:
            got += self._group_read("0", count)
            self._history_read = len(got) < count  # the rest next time
        if len(got) < count:
            got += self._claim(count - len(got))
        if len(got) < count:
            got += self._group_read(">", count - len(got))
        return got

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
        msgs = [to_message(e, f, 1, self._item) for e, f in entries if f]
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
        msgs = [to_message(e, f, 1, self._item) for e, f in reply[1] if f]
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
