"""``from_url``: build a sink from one URL string (for configuration files and the CLI)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from spoolkit._internal.redact import redact_url
from spoolkit.errors import ConfigError

if TYPE_CHECKING:
    from spoolkit.typing import AsyncSink, Sink

__all__ = ["SCHEMES", "from_url"]

SCHEMES: dict[str, str] = {
    "amqp": "amqp://user:pass@host:5672/vhost?exchange=E&routing_key=K&mandatory=true"
    "&persistent=true&confirm_timeout=30",
    "amqps": "amqps://user:pass@host:5671/vhost?exchange=E&routing_key=K&mandatory=true"
    "&persistent=true&confirm_timeout=30",
    "http": "http(s)://host/path?format=json|ndjson&gzip=true&timeout=10"
    "[&async=true&http2=true&concurrency=8]",
    "https": "http(s)://host/path?format=json|ndjson&gzip=true&timeout=10"
    "[&async=true&http2=true&concurrency=8]",
    "jsonl": "jsonl:///abs/path/file.jsonl?max_bytes=N&keep=5",
    "nats": "nats://host:4222?subject=X&stream=S&timeout=10",
    "otlp+http": "otlp+http(s)://host:4318[/v1/logs]?gzip=true&timeout=10&service_name=S",
    "otlp+https": "otlp+http(s)://host:4318[/v1/logs]?gzip=true&timeout=10&service_name=S",
    "postgresql": "postgresql://user:pass@host:5432/db?table=T&create_table=true",
    "postgres": "postgresql://user:pass@host:5432/db?table=T&create_table=true",
    "redis": "redis://host:6379/0?stream=S&maxlen=N&approximate=true",
    "rediss": "rediss://host:6380/0?stream=S&maxlen=N&approximate=true",
    "stdout": "stdout://",
    "syslog+tcp": "syslog+tcp://host:514?app_name=A&msgid=M&facility=user&hostname=H&procid=P",
    "syslog+tls": "syslog+tls://host:6514?app_name=A&ca_file=/path/ca.pem&verify=true",
}
"""Every scheme ``from_url`` accepts, with the shape of its URL."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def from_url(url: str) -> Sink | AsyncSink:
    """Build a sink from a URL.

    | URL | sink |
    |---|---|
    | ``amqp://u:p@rabbit/vhost?exchange=logs&routing_key=app`` (``amqps://``) | `AmqpSink` |
    | ``http(s)://host/path?format=ndjson`` | `HttpSink` |
    | ``http(s)://host/path?async=true&concurrency=8`` | `AsyncHttpSink` |
    | ``jsonl:///var/log/app.jsonl?max_bytes=N`` | `JsonlSink` |
    | ``nats://nats:4222?stream=EVENTS&subject=events.app`` | `NatsSink` |
    | ``otlp+http://collector:4318?service_name=api`` | `OtlpLogSink` |
    | ``postgresql://u:p@host/db?table=events`` | `PostgresSink` |
    | ``redis://host:6379/0?stream=events`` | `RedisStreamSink` |
    | ``stdout://`` | `StdoutSink` |
    | ``syslog+tcp://logs:514?app_name=api`` (``syslog+tls://``) | `SyslogSink` |

    Sink options travel in the query string. For ``http(s)`` the options are ``format``,
    ``gzip``, ``timeout`` and ``async``; ``async=true`` picks `AsyncHttpSink` (the default,
    ``false``, `HttpSink`), which also takes ``http2`` and ``concurrency`` (given without
    ``async=true``, they are a ConfigError); every other query parameter is part of the target
    URL and is sent to the server (so ``?token=...`` still reaches the API). For ``postgresql`` the
    options are ``table`` (required) and ``create_table``; other parameters must be libpq
    connection parameters (``sslmode``, ``connect_timeout``...). For ``redis`` the options are
    ``stream`` (required), ``maxlen`` and ``approximate``; other parameters must be redis-py
    URL options (``socket_timeout``...). ``jsonl`` takes ``max_bytes`` and ``keep`` and an
    absolute path (three slashes). For ``otlp+http(s)`` the options are ``gzip`` (default
    true), ``timeout`` and ``service_name``; other query parameters stay in the endpoint URL.
    For ``syslog+tcp``/``syslog+tls`` the options are ``app_name``, ``hostname``, ``procid``,
    ``msgid``, ``facility``, ``sd_id``, ``timeout`` and, for TLS, ``ca_file`` and ``verify``.
    For ``amqp``/``amqps`` the options are ``exchange``, ``routing_key``, ``mandatory`` and
    ``persistent`` (default true) and ``confirm_timeout`` (seconds, 30); other query parameters
    must be pika URL options (``heartbeat``, ``socket_timeout``, ``ssl_options``...). For
    ``nats`` the options are ``subject`` (required), ``stream`` and ``timeout``.
    Booleans are ``true/false``, ``1/0``, ``yes/no``, ``on/off``.

    Only the chosen sink's driver is imported.

    Args:
        url: the sink URL.

    Returns:
        The sink, not yet opened.

    Raises:
        ConfigError: an unknown scheme, a missing required option, an unknown option or a bad
            value. The message lists what is accepted and never shows a password.
        ImportError: the sink's optional dependency is not installed.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a sink URL must be a string, not {type(url).__name__}")
    shown = redact_url(url)
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    build = _BUILDERS.get(scheme)
    if build is None:
        shapes = "; ".join(dict.fromkeys(SCHEMES.values()))
        raise ConfigError(
            f"unknown sink URL scheme {scheme!r} in {shown!r}; accepted schemes: "
            f"{', '.join(sorted(SCHEMES))} ({shapes})"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed sink URL {shown!r}") from None
    return build(url, parts.scheme.lower(), _Query(parts.query, shown), shown)


class _Query:
    """The query string of a sink URL: options are taken out, the rest stays raw."""

    def __init__(self, query: str, shown: str) -> None:
        self.shown = shown
        self.pairs: list[tuple[str, str, str]] = []  # (name, decoded value, raw text)
        for raw in query.split("&") if query else []:
            if not raw:
                continue
            name, _, value = raw.partition("=")
            self.pairs.append((unquote_plus(name), unquote_plus(value), raw))

    def take(self, names: Iterable[str]) -> dict[str, str]:
        """Remove and return the options called ``names``; an option given twice is an error."""
        wanted = set(names)
        taken: dict[str, str] = {}
        rest = []
        for name, value, raw in self.pairs:
            if name in wanted:
                if name in taken:
                    raise ConfigError(f"option {name!r} is given twice in {self.shown!r}")
                taken[name] = value
            else:
                rest.append((name, value, raw))
        self.pairs = rest
        return taken

    def names(self) -> list[str]:
        return [name for name, _, _ in self.pairs]

    def raw(self) -> str:
        return "&".join(raw for _, _, raw in self.pairs)

    def reject_unknown(self, allowed: Iterable[str], accepted: str) -> None:
        """Raise ConfigError naming the parameters left that are not in ``allowed``."""
        allowed = set(allowed)
        unknown = sorted({n for n in self.names() if n not in allowed})
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(map(repr, unknown))} in {self.shown!r}; "
                f"accepted: {accepted}"
            )


def _require(options: dict[str, str], name: str, shown: str, accepted: str) -> str:
    value = options.get(name, "")
    if not value:
        raise ConfigError(f"{shown!r} needs the {name}= option; accepted: {accepted}")
    return value


def _bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"option {name}={value!r} must be true or false (or 1/0, yes/no, on/off)")


def _int(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"option {name}={value!r} must be a whole number") from None
    if number < minimum:
        raise ConfigError(f"option {name}={value!r} must be at least {minimum}")
    return number


def _float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"option {name}={value!r} must be a number") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"option {name}={value!r} must be a positive number of seconds")
    return number


def _http(url: str, scheme: str, query: _Query, shown: str) -> Sink | AsyncSink:
    options = query.take(("format", "gzip", "timeout", "async", "http2", "concurrency"))
    fmt = options.get("format", "json")
    if fmt not in ("json", "ndjson"):
        raise ConfigError(f"option format={fmt!r} must be json or ndjson")
    parts = urlsplit(url)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, query.raw(), parts.fragment))
    fmt_option: Literal["json", "ndjson"] = "ndjson" if fmt == "ndjson" else "json"
    gzip = _bool("gzip", options["gzip"]) if "gzip" in options else False
    timeout = _float("timeout", options["timeout"]) if "timeout" in options else 10.0
    if "async" in options and _bool("async", options["async"]):
        from spoolkit.sinks.http_async import AsyncHttpSink  # noqa: PLC0415 - lazy httpx

        return AsyncHttpSink(
            target,
            format=fmt_option,
            gzip=gzip,
            timeout=timeout,
            http2=_bool("http2", options["http2"]) if "http2" in options else False,
            concurrency=_int("concurrency", options["concurrency"], 1)
            if "concurrency" in options
            else None,
        )
    for name in ("http2", "concurrency"):
        if name in options:
            raise ConfigError(
                f"option {name}= is for the async HTTP sink: add async=true to {shown!r}"
            )
    from spoolkit.sinks.http import HttpSink  # noqa: PLC0415 - import httpx only when asked

    return HttpSink(target, format=fmt_option, gzip=gzip, timeout=timeout)


def _jsonl(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.jsonl import JsonlSink  # noqa: PLC0415 - keep from_url's imports lazy

    accepted = "max_bytes, keep; the URL is jsonl:///absolute/path/file.jsonl"
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or path == "/":
        raise ConfigError(
            f"{shown!r} must name an absolute file path after three slashes, "
            f"as in {SCHEMES['jsonl']}"
        )
    options = query.take(("max_bytes", "keep"))
    query.reject_unknown((), accepted)
    return JsonlSink(
        path,
        max_bytes=_int("max_bytes", options["max_bytes"], 1) if "max_bytes" in options else None,
        keep=_int("keep", options["keep"], 0) if "keep" in options else 5,
    )


def _postgres(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from psycopg.pq import Conninfo  # noqa: PLC0415 - import psycopg only when asked

    from spoolkit.sinks.postgres import PostgresSink  # noqa: PLC0415 - same

    accepted = (
        "table (required), create_table; other query parameters must be libpq connection "
        "parameters such as sslmode, connect_timeout, application_name"
    )
    options = query.take(("table", "create_table"))
    table = _require(options, "table", shown, accepted)
    libpq = {opt.keyword.decode() for opt in Conninfo.get_defaults()}
    query.reject_unknown(libpq, accepted)
    parts = urlsplit(url)
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, query.raw(), parts.fragment))
    create = _bool("create_table", options["create_table"]) if "create_table" in options else False
    return PostgresSink(dsn, table, create_table=create)


def _redis(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS  # noqa: PLC0415 - lazy driver

    from spoolkit.sinks.redis import RedisStreamSink  # noqa: PLC0415 - same

    accepted = (
        "stream (required), maxlen, approximate; other query parameters must be redis-py URL "
        "options such as socket_timeout, socket_connect_timeout, db"
    )
    options = query.take(("stream", "maxlen", "approximate"))
    stream = _require(options, "stream", shown, accepted)
    query.reject_unknown(URL_QUERY_ARGUMENT_PARSERS, accepted)
    parts = urlsplit(url)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, query.raw(), parts.fragment))
    return RedisStreamSink(
        target,
        stream,
        maxlen=_int("maxlen", options["maxlen"], 0) if "maxlen" in options else None,
        approximate=_bool("approximate", options["approximate"])
        if "approximate" in options
        else True,
    )


def _stdout(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.stdout import StdoutSink  # noqa: PLC0415 - keep from_url's imports lazy

    parts = urlsplit(url)
    if parts.netloc or parts.path:
        raise ConfigError(f"{shown!r}: the stdout sink takes no host or path; use stdout://")
    query.reject_unknown((), "none (stdout:// takes no options)")
    return StdoutSink()


def _otlp(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.otlp import URL_OPTIONS, from_parsed_url  # noqa: PLC0415 - lazy driver

    options = query.take(URL_OPTIONS)
    return from_parsed_url(url, options, shown)  # other query parameters stay in the endpoint


def _syslog(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.syslog import URL_OPTIONS, from_parsed_url  # noqa: PLC0415 - lazy

    options = query.take(URL_OPTIONS)
    query.reject_unknown((), ", ".join(URL_OPTIONS))
    return from_parsed_url(url, options, shown)


def _amqp(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.amqp import from_sink_url  # noqa: PLC0415 - import pika only when asked

    # the sink takes its options out; the other query parameters are pika URL options
    return from_sink_url(url)


def _nats(url: str, scheme: str, query: _Query, shown: str) -> Sink:
    from spoolkit.sinks.nats import URL_OPTIONS, from_sink_url  # noqa: PLC0415 - lazy driver

    options = query.take(URL_OPTIONS)
    query.reject_unknown((), "subject (required), stream, timeout")
    return from_sink_url(url, options)


_BUILDERS: dict[str, Callable[[str, str, _Query, str], Sink | AsyncSink]] = {
    "amqp": _amqp,
    "amqps": _amqp,
    "http": _http,
    "https": _http,
    "jsonl": _jsonl,
    "nats": _nats,
    "otlp+http": _otlp,
    "otlp+https": _otlp,
    "postgresql": _postgres,
    "postgres": _postgres,
    "redis": _redis,
    "rediss": _redis,
    "stdout": _stdout,
    "syslog+tcp": _syslog,
    "syslog+tls": _syslog,
}
