"""A NATS JetStream backend URL's options, read and checked without nats-py.

:func:`spoolkit.backends.open_backend` checks a ``nats://`` backend URL with :func:`split_url`
before it imports the ``nats`` extra, so a URL without ``stream`` or with a bad limit is a
:class:`~spoolkit.errors.ConfigError` whether or not nats-py is installed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from spoolkit._internal.redact import MASK, redact_url
from spoolkit.errors import ConfigError

__all__ = ["OPTIONS", "check_limits", "check_names", "number", "split_url"]

OPTIONS = (
    "stream",
    "subject",
    "consumer",
    "ack_wait",
    "max_deliveries",
    "serializer",
    "timeout",
    "replicas",
)

_NAME = re.compile(r"^[^\s.*>/\\]+$")  # JetStream stream and consumer names
_SUBJECT = re.compile(r"^[^\s*>]+$")  # a literal subject: no wildcards


def _shown(url: str) -> str:
    """The URL with its password, and a lone token (``nats://TOKEN@host``), masked."""
    shown = redact_url(url)
    try:
        parts = urlsplit(shown)
    except ValueError:
        return shown
    userinfo, sep, hostport = parts.netloc.rpartition("@")
    if sep and userinfo and ":" not in userinfo:  # a lone token
        return urlunsplit((parts.scheme, f"{MASK}@{hostport}", *parts[2:]))
    return shown


def check_names(stream: str, subject: str | None, consumer: str) -> None:
    """Check the stream, subject and consumer names.

    Raises:
        ConfigError: a name is empty, not a string, or has characters JetStream refuses
            (whitespace, ``.``, ``*``, ``>`` in a stream or consumer name; wildcards in the
            subject).
    """
    for name, value in (("stream", stream), ("consumer", consumer)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ConfigError(
                f"{name} must be a non-empty JetStream name without whitespace, '.', '*', "
                f"'>', '/' or '\\', not {value!r}"
            )
    if subject is not None and (not isinstance(subject, str) or not _SUBJECT.match(subject)):
        raise ConfigError(f"subject must be a literal NATS subject (no wildcards), not {subject!r}")


def check_limits(ack_wait: float, max_deliveries: int, timeout: float, replicas: int) -> None:
    """Check ``ack_wait``, ``max_deliveries``, ``timeout`` and ``replicas``.

    Raises:
        ConfigError: a limit is out of range or of the wrong type.
    """
    if isinstance(ack_wait, bool) or not isinstance(ack_wait, int | float) or not ack_wait > 0:
        raise ConfigError(f"ack_wait must be > 0 seconds, not {ack_wait!r}")
    if (
        isinstance(max_deliveries, bool)
        or not isinstance(max_deliveries, int)
        or max_deliveries < 1
    ):
        raise ConfigError(f"max_deliveries must be >= 1, not {max_deliveries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, not {timeout!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
        raise ConfigError(f"replicas must be 1 to 5, not {replicas!r}")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a backend URL into the servers' URL (no query) and the backend's options.

    Raises:
        ConfigError: an unknown option, one given twice, or ``stream`` missing.
    """
    shown = _shown(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed NATS backend URL {shown!r}") from None
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in OPTIONS:
            raise ConfigError(
                f"unknown option {key!r} in NATS backend URL {shown!r}; accepted: "
                f"{', '.join(OPTIONS)} (stream required)"
            )
        if key in options:
            raise ConfigError(f"option {key!r} is given twice in {shown!r}")
        options[key] = value
    if not options.get("stream"):
        raise ConfigError(
            f"NATS backend URL {shown!r} lacks stream; use "
            "nats://host:4222?stream=S[&consumer=C&subject=X&ack_wait=60&max_deliveries=10]"
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), options


def number(options: dict[str, str], name: str, kind: type[Any], default: Any) -> Any:
    """Option ``name`` as ``kind`` (``int`` or ``float``), or ``default`` when absent.

    Raises:
        ConfigError: the value is not a number of that kind.
    """
    if name not in options:
        return default
    try:
        return kind(options[name])
    except ValueError:
        raise ConfigError(
            f"{name} must be a{'n int' if kind is int else ' float'}, not {options[name]!r}"
        ) from None
