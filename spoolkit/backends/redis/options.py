"""The Redis backend's URL checked against redis-py's options; the client a URL makes.

The backend's own options are read and checked in :mod:`spoolkit.backends.redis_url` (no
redis-py needed)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.retry import Retry

from spoolkit._internal.redact import redact_text, redact_url, secrets_in_url
from spoolkit.backends.redis_url import OPTIONS, split_options
from spoolkit.errors import ConfigError

__all__ = ["client_from_url", "connect", "default_consumer", "split_url"]


def default_consumer() -> str:
    """A consumer name unique to this process: ``<hostname>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a backend URL into the client's URL and the backend's options.

    The query's backend options (``spoolkit.backends.redis_url.OPTIONS``) are taken out;
    redis-py's connection options (``socket_timeout``, ``max_connections``, ...) stay in the
    client's URL.

    Returns:
        The URL to build the client from, and the backend options found in the query.

    Raises:
        ConfigError: an option neither the backend's nor redis-py's, or ``stream`` or
            ``group`` missing.
    """
    known = sorted(URL_QUERY_ARGUMENT_PARSERS)
    for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key not in OPTIONS and key not in URL_QUERY_ARGUMENT_PARSERS:
            raise ConfigError(
                f"unknown option {key!r} in Redis backend URL {redact_url(url)!r}; accepted: "
                f"{', '.join(OPTIONS)} (stream and group required), and redis-py's "
                f"{', '.join(known)}"
            )
    client_url, options, _ = split_options(url)
    return client_url, options


def connect(url_or_client: str | redis.Redis, stream: str) -> tuple[redis.Redis, list[str], str]:
    """The backend's client, the secrets its errors must not show, and its description.

    Raises:
        ConfigError: a bad URL, or a client with ``decode_responses=True``.
    """
    if isinstance(url_or_client, str):
        secrets = secrets_in_url(url_or_client)
        description = f"RedisBackend({redact_url(url_or_client)!r}, stream={stream!r})"
        return client_from_url(url_or_client, secrets), secrets, description
    if url_or_client.get_connection_kwargs().get("decode_responses"):
        raise ConfigError("the Redis client must not use decode_responses=True")
    return url_or_client, [], f"RedisBackend(<client>, stream={stream!r})"


def client_from_url(url: str, secrets: Sequence[str]) -> redis.Redis:
    """A client that fails fast (10 s timeouts, one reconnect); the URL's query overrides."""
    try:
        return redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=10.0, retry=Retry(NoBackoff(), 1)
        )
    except (ValueError, TypeError) as exc:
        detail = redact_text(str(exc), secrets)
        raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {detail}") from None
