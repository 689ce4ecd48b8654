"""Writing a Redis stream: ``XADD`` one entry or many (per ``MULTI/EXEC``), ``XACK`` + ``XDEL``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from spoolkit.backends.redis.entries import RedisCall, entry_fields, text

__all__ = ["StreamWriter"]

_TXN_CHUNK = 1000  # entries per MULTI/EXEC in add_many


class StreamWriter:
    """Adds entries to a stream (trimmed to about ``maxlen``) and removes acknowledged ones.

    Args:
        client: the backend's client.
        stream: the stream key.
        group: the consumer group acknowledgements go to.
        maxlen: cap the stream at about this many entries (``XADD MAXLEN ~``); None never trims.
        call: runs each Redis call, mapping redis-py errors.
    """

    def __init__(
        self, client: redis.Redis, *, stream: str, group: str, maxlen: int | None, call: RedisCall
    ) -> None:
        self.client, self.stream, self.group, self.maxlen = client, stream, group, maxlen
        self._call = call

    def _xadd(self, target: Any, fields: Any) -> Any:
        return target.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)

    def add(self, payload: bytes, enqueued_at: float, record_id: str | None = None) -> str:
        """XADD one entry (one round trip); return its entry id."""
        fields = entry_fields(payload, enqueued_at, record_id)
        entry = self._call(lambda: self._xadd(self.client, fields))
        return text(entry)

    def add_many(
        self, payloads: Sequence[bytes], enqueued_at: float, stored: Callable[[int], None]
    ) -> None:
        """XADD the payloads in order, up to 1000 per MULTI/EXEC, telling ``stored`` how
        many each transaction added (an error stops at the first transaction that failed)."""
        for i in range(0, len(payloads), _TXN_CHUNK):
            chunk = payloads[i : i + _TXN_CHUNK]

            def send(chunk: Sequence[bytes] = chunk) -> None:
                with self.client.pipeline(transaction=True) as pipe:
                    for p in chunk:
                        self._xadd(pipe, entry_fields(p, enqueued_at))
                    pipe.execute()

            self._call(send)
            stored(len(chunk))

    def remove(self, ids: list[str]) -> None:
        """XACK and XDEL the entries, in one MULTI/EXEC."""

        def send() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, self.group, *ids)
                pipe.xdel(self.stream, *ids)
                pipe.execute()

        self._call(send)
