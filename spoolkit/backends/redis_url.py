"""A Redis backend URL's own options, read and checked without redis-py.

:func:`spoolkit.backends.open_backend` checks a ``redis://`` backend URL with :func:`check_url`
before it imports the ``redis`` extra, so a URL without ``stream`` or ``group``, or with a bad
limit, is a :class:`~spoolkit.errors.ConfigError` whether or not redis-py is installed.
redis-py's own connection options stay in the client's URL; their names are checked against
redis-py's list once it is imported (:func:`spoolkit.backends.redis.options.split_url`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from spoolkit._internal.redact import redact_url
from spoolkit.errors import ConfigError

__all__ = ["OPTIONS", "check_limits", "check_names", "check_url", "number", "split_options"]

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


def split_options(url: str) -> tuple[str, dict[str, str], list[str]]:
    """Split a backend URL into the client's URL and the backend's options.

    Returns:
        The URL to build the client from (every other query option left in it), the backend
        options found in the query (:data:`OPTIONS`), and the names of the other options.

    Raises:
        ConfigError: ``stream`` or ``group`` missing.
    """
    parts = urlsplit(url)
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in OPTIONS:
            options[key] = value
        else:
            rest.append((key, value))
    missing = [k for k in ("stream", "group") if not options.get(k)]
    if missing:
        raise ConfigError(
            f"Redis backend URL {redact_url(url)!r} lacks {' and '.join(missing)}: add "
            f"?stream=NAME&group=NAME (accepted options: {', '.join(OPTIONS)})"
        )
    query = "&".join(f"{k}={v}" for k, v in rest)
    client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return client_url, options, [k for k, _ in rest]


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


def check_url(url: str) -> None:
    """Check a backend URL's own options: what can be checked before redis-py is imported.

    Raises:
        ConfigError: ``stream`` or ``group`` missing, a name empty, a limit not a number or
            out of range.
    """
    _, options, _ = split_options(url)
    check_names(options["stream"], options["group"], options.get("consumer"))
    check_limits(
        number(options, "claim_idle", float, 60.0),
        number(options, "max_deliveries", int, 10),
        number(options, "maxlen", int, None),
    )
