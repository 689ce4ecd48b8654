"""RedisStreamSink: XADD each record to a Redis stream."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit._internal.redact import redact_text, redact_url, secrets_in_url
from spoolkit.errors import ConfigError
from spoolkit.sinks._encode import encode_batch
from spoolkit.typing import Record

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.typing import EncodableT, FieldT
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("RedisStreamSink needs redis: pip install 'spoolkit[redis]'") from exc

# after the check above, so that a missing redis-py names this sink
from spoolkit._internal.redis_errors import map_redis_error

__all__ = ["RedisStreamSink", "map_redis_error"]


def _client_defaults() -> dict[str, Any]:
    """Options for a client the sink makes from a URL (the URL's query string overrides them).

    Fail fast and let the spool's retry policy do the waiting: timeouts instead of blocking
    forever, and one immediate reconnect (for a pooled connection the server dropped) instead
    of redis-py's default backoff.
    """
    return {
        "socket_timeout": 10.0,
        "socket_connect_timeout": 10.0,
        "retry": Retry(NoBackoff(), 1),
    }


class RedisStreamSink:
    """Append each record to a Redis stream with ``XADD``, a batch per pipeline round trip.

    Each entry has the fields ``id`` (``record.id``), ``enqueued_at`` (epoch seconds, as
    text) and ``item`` (the item as JSON). A batch is sent as one ``MULTI``/``EXEC`` pipeline,
    so it lands in the stream together and in order. Redis gives every entry a new stream id,
    so a batch that is redelivered (its acknowledgement was lost) appears twice: consumers
    that must not see duplicates should deduplicate on the ``id`` field.

    With ``maxlen`` the stream is trimmed on every add (``MAXLEN ~ N`` when ``approximate``,
    which is much cheaper than an exact trim).

    The sink is thread-safe: redis-py's client hands each concurrent pipeline its own pooled
    connection. A client built from a URL is owned (closed by ``close()``); a client passed in
    is left open.

    Errors map in :func:`map_redis_error`: connection trouble and busy or read-only servers
    are transient; other error replies (``WRONGTYPE``: the key is not a stream) are permanent.

    Args:
        url_or_client: a ``redis://``/``rediss://``/``unix://`` URL, or a ``redis.Redis``.
        stream: the stream key.
        maxlen: trim the stream to about this many entries.
        approximate: trim with ``~`` (whole macro nodes) rather than exactly.

    Raises:
        ConfigError: a bad URL, an empty stream name or a bad ``maxlen``.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        stream: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError("stream must be a non-empty stream key")
        if maxlen is not None and (isinstance(maxlen, bool) or maxlen < 0):
            raise ConfigError(f"maxlen must be 0 or more entries, not {maxlen!r}")
        self.stream = stream
        self.maxlen = maxlen
        self.approximate = approximate
        self._lock = threading.Lock()
        self._url: str | None
        if isinstance(url_or_client, str):
            self._url = url_or_client
            self._secrets = secrets_in_url(url_or_client)
            self._description = f"RedisStreamSink({redact_url(url_or_client)!r}, stream={stream!r})"
            self._client: redis.Redis | None = self._make_client()
        else:
            self._url = None
            self._secrets = []
            self._description = f"RedisStreamSink(<client>, stream={stream!r})"
            self._client = url_or_client

    def __repr__(self) -> str:
        return self._description

    def _make_client(self) -> redis.Redis:
        assert self._url is not None
        try:
            return redis.Redis.from_url(self._url, **_client_defaults())
        except (ValueError, TypeError) as exc:
            # from None: redis-py's message may quote the URL.
            detail = redact_text(str(exc), self._secrets)
            raise ConfigError(f"bad Redis URL {redact_url(self._url)!r}: {detail}") from None

    @property
    def client(self) -> redis.Redis:
        """The redis-py client in use (made again after ``close()`` for an owned client)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def open(self) -> None:
        """Make the client (for a URL). No connection is made: the first write connects, so a
        server that is down at start does not keep the spool from buffering."""
        _ = self.client

    def after_fork(self) -> None:
        """In a forked child: a lock of its own (redis-py itself replaces the parent's
        connections in a child without closing them)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close an owned client's connections; a client passed in is left alone."""
        if self._url is None:
            return
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def write(self, batch: Sequence[Record]) -> None:
        """XADD every record of the batch in one transactional pipeline.

        Raises:
            TransientError: connection trouble, or a busy, loading or read-only server.
            PermanentError: Redis refused the command (the key holds another type), or no
                item of the batch could be encoded as JSON.
            PartialFailure: some items could not be encoded; the others were added.
        """
        if not batch:
            return
        encoded = encode_batch(batch, _item)
        encoded.raise_if_all_bad(self._description)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for record, item in encoded.ok:
                    fields: dict[FieldT, EncodableT] = {
                        "id": record.id,
                        "enqueued_at": str(record.enqueued_at),
                        "item": json_utf8(item),  # lone surrogates as JSON escapes
                    }
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=self.approximate)
                pipe.execute()
        except redis.RedisError as exc:
            raise map_redis_error(exc, self._description, self._secrets) from exc
        encoded.raise_if_some_bad(self._description)


def _item(record: Record) -> Any:
    return record.item
