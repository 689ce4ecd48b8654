"""The Redis backend's options: checked, read from a ``redis://`` URL; the client a URL makes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.retry import Retry

from spoolkit._redact import redact_text, redact_url, secrets_in_url
from spoolkit.errors import ConfigError

__all__ = [
    "OPTIONS",
    "check_limits",
    "check_names",
    "client_from_url",
    "connect",
    "default_consumer",
    "number",
    "split_url",
]

OPTIONS = ("stream", "group", "consumer", "claim_idle", "max_deliveries", "maxlen", "serializer")


def check_names(stream: str, group: str, consumer: str | None) -> None:
    """Check the stream, group and consumer names (see ``RedisBackend``).

    Raises:
        ConfigError: a name is empty or not a string.
    """
    for name, value in (("stream", stream), ("group", group), ("consumer", consumer)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{name} must be a non-empty string, not {value!r}")


def check_limits(claim_idle: float, max_deliveries: int, maxlen: int | None) -> None:
    """Check ``claim_idle``, ``max_deliveries`` and ``maxlen`` (see ``RedisBackend``).

    Raises:
        ConfigError: a limit is out of range or of the wrong type.
    """
    if isinstance(claim_idle, bool) or not claim_idle > 0:
        raise ConfigError(f"claim_idle must be > 0 seconds, not {claim_idle!r}")
    if isinstance(max_deliveries, bool) or max_deliveries < 1:
        raise ConfigError(f"max_deliveries must be >= 1, not {max_deliveries!r}")
    if maxlen is not None and (isinstance(maxlen, bool) or maxlen < 1):
        raise ConfigError(f"maxlen must be >= 1 entries or None, not {maxlen!r}")


def default_consumer() -> str:
    """A consumer name unique to this process: ``<hostname>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a backend URL into the client's URL and the backend's options.

    The query's backend options (:data:`OPTIONS`) are taken out; redis-py's connection
    options (``socket_timeout``, ``max_connections``, ...) stay in the client's URL.

    Returns:
        The URL to build the client from, and the backend options found in the query.

    Raises:
        ConfigError: ``stream`` or ``group`` missing, or an unknown option.
    """
    parts = urlsplit(url)
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    known = sorted(URL_QUERY_ARGUMENT_PARSERS)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in OPTIONS:
            options[key] = value
        elif key in URL_QUERY_ARGUMENT_PARSERS:
            rest.append((key, value))
        else:
            raise ConfigError(
                f"unknown option {key!r} in Redis backend URL {redact_url(url)!r}; accepted: "
                f"{', '.join(OPTIONS)} (stream and group required), and redis-py's "
                f"{', '.join(known)}"
            )
    missing = [k for k in ("stream", "group") if not options.get(k)]
    if missing:
        raise ConfigError(
            f"Redis backend URL {redact_url(url)!r} lacks {' and '.join(missing)}: add "
            f"?stream=NAME&group=NAME (accepted options: {', '.join(OPTIONS)})"
        )
    query = "&".join(f"{k}={v}" for k, v in rest)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), options


def number(options: dict[str, str], key: str, kind: type[Any], default: Any) -> Any:
    """``options[key]`` as a ``kind`` (``int``, ``float``), or ``default`` when absent.

    Raises:
        ConfigError: the value is not a ``kind``.
    """
    if key not in options:
        return default
    try:
        return kind(options[key])
    except ValueError:
        raise ConfigError(f"{key} must be a {kind.__name__}, not {options[key]!r}") from None


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
