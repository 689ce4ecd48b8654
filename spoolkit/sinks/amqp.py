"""AmqpSink: publish each record to RabbitMQ (AMQP 0-9-1) with publisher confirms."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit._internal.redact import carry_secrets, redact_text, redact_url, secrets_in_url
from spoolkit.errors import (
    ConfigError,
    PartialFailure,
    PermanentError,
    SinkError,
    TransientError,
)
from spoolkit.sinks._encode import ToJson, encode_batch
from spoolkit.typing import Record

try:
    import pika  # type: ignore[import-untyped]  # pika ships no type information
    import pika.exceptions  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("AmqpSink needs pika: pip install 'spoolkit[amqp]'") from exc

__all__ = ["URL_OPTIONS", "AmqpSink", "from_sink_url", "map_amqp_error"]

URL_OPTIONS = ("exchange", "routing_key", "mandatory", "persistent", "confirm_timeout")
"""The sink's own query options in an ``amqp://`` URL; the others go to pika."""

# Connection options the sink sets unless the URL says otherwise: fail fast and let the
# spool's retry policy wait (pika's defaults retry the connection and may block forever
# while the broker holds publishers back under a memory or disk alarm).
_PIKA_DEFAULTS = {
    "connection_attempts": "1",
    "socket_timeout": "10",
    "stack_timeout": "15",
    "blocked_connection_timeout": "30",
}

# AMQP reply codes a channel or connection close carries (AMQP 0-9-1, section 1.9).
_NOT_NOW_CODES = frozenset({311, 320, 405, 503, 504, 506, 541})  # content-too-large excluded
_REFUSED_CODES = frozenset({403, 404, 406, 312, 313, 530, 540})


class _Channel:
    """One connection with one channel in confirm mode, used by one write at a time.

    pika's ``BlockingChannel`` waits for each message's confirm before publishing the next (a
    round trip, and for a persistent message an fsync, per record). To publish a whole batch
    and then wait once for all its confirms, this drives the channel's asynchronous core
    (``BlockingChannel._impl``, a ``pika.channel.Channel``) directly: the confirm and return
    callbacks are registered there, and ``BlockingChannel._flush_output`` runs the I/O loop
    until they arrived. Both are pika 1.x internals, stable since pika 1.0; the test suite
    exercises them against a real broker.
    """

    def __init__(self, params: Any) -> None:
        self.connection = pika.BlockingConnection(params)
        self.outstanding: dict[int, Record] = {}  # delivery tag -> record not yet confirmed
        self.nacked: list[Record] = []
        self.returned: dict[str, int] = {}  # message_id -> reply code
        self.tag = 0
        try:
            self.channel = self.connection.channel()
            self.core = self.channel._impl  # see the class docstring
            self.core.add_on_return_callback(self._on_return)
            selected: list[object] = []
            self.core.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
            self.channel._flush_output(lambda: bool(selected))
        except BaseException:
            self.discard()
            raise

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        tags = [t for t in self.outstanding if t <= tag] if method.multiple else [tag]
        nack = isinstance(method, pika.spec.Basic.Nack)
        for t in tags:
            record = self.outstanding.pop(t, None)
            if nack and record is not None:
                self.nacked.append(record)

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        self.returned[str(properties.message_id)] = int(method.reply_code)

    def publish(
        self, record: Record, body: bytes, *, exchange: str, key: str, props: Any, mandatory: bool
    ) -> None:
        """Send one message (buffered: nothing is awaited)."""
        self.core.basic_publish(exchange, key, body, props, mandatory)
        self.tag += 1
        self.outstanding[self.tag] = record

    def wait(self, timeout: float) -> bool:
        """Run the I/O loop until every message is confirmed; False after ``timeout`` s.

        Raises:
            pika.exceptions.AMQPError: the channel or the connection closed meanwhile.
        """
        deadline = time.monotonic() + timeout
        timer = self.connection.call_later(timeout, _nothing)  # wakes the loop at the deadline
        try:
            self.channel._flush_output(  # see the class docstring
                lambda: not self.outstanding or time.monotonic() >= deadline
            )
        finally:
            with contextlib.suppress(Exception):
                self.connection.remove_timeout(timer)
        return not self.outstanding

    def reset(self) -> None:
        self.nacked = []
        self.returned = {}

    @property
    def usable(self) -> bool:
        return bool(self.connection.is_open and self.channel.is_open and not self.outstanding)

    def discard(self) -> None:
        # closing a broken connection may fail in any way: it is being dropped anyway
        with contextlib.suppress(Exception):
            if self.connection.is_open:
                self.connection.close()


def _nothing() -> None:
    return None


class AmqpSink:
    """Publish each record as one AMQP message, confirmed by the broker (RabbitMQ).

    Every message carries ``message_id`` = ``record.id`` (consumers deduplicate on it),
    ``timestamp`` = ``record.enqueued_at``, ``content_type`` ``application/json`` and, by
    default, ``delivery_mode=2`` (persistent: a durable queue keeps it across a broker
    restart). The body is the record as JSON (``{"id", "enqueued_at", "item"}``, or what
    ``to_json`` returns).

    The channel is in publisher-confirm mode and messages are published with
    ``mandatory=True``: ``write`` returns only once the broker has confirmed every message
    of the batch, that is, written it to every queue it was routed to (to disk, for a
    persistent message on a durable queue). What the broker says instead maps so:

    - a **return** (no queue is bound for the routing key: ``312 NO_ROUTE``): the record is
      refused, :class:`PermanentError` (dead-lettered; requeue it once the binding exists).
      When only some records of a batch were returned, :class:`PartialFailure` names them.
    - a **nack** (the queue could not take it: a queue process failed, or a queue with
      ``x-overflow=reject-publish`` is full): :class:`TransientError` for that record (via
      :class:`PartialFailure` when the others were confirmed): it is retried.
    - the channel closed by the broker: ``404`` (no such exchange), ``403`` (access refused)
      and ``406`` (precondition failed) are :class:`PermanentError`; other codes are transient.
    - connection trouble (refused, reset, timed out, the broker shutting down or blocking
      publishers under an alarm, a failed login): :class:`TransientError`. A batch cut short
      raises :class:`PartialFailure` naming the records not yet confirmed.

    Messages are published one after the other on a blocking pika connection, each confirmed
    before the next. The sink is thread-safe: each concurrent ``write`` borrows a connection
    of its own from a small pool (one per spool worker), so workers publish in parallel.

    Args:
        url: ``amqp://user:pass@host:5672/vhost`` (or ``amqps://``): pika's URL, whose query
            may hold pika options (``heartbeat``, ``socket_timeout``, ``ssl_options``...).
        exchange: the exchange to publish to (``""``: the default exchange, where the routing
            key is a queue name).
        routing_key: the routing key, or a function of the record returning it.
        mandatory: ask the broker to return unroutable messages (else it drops them).
        persistent: ``delivery_mode=2``.
        confirm_timeout: seconds to wait for the broker's confirms of a batch; the records
            not confirmed by then fail with :class:`TransientError` (and are published again).
        to_json: maps a record to the JSON-safe body; default ``{"id", "enqueued_at", "item"}``.

    Raises:
        ConfigError: a bad URL or an unknown pika option.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: str | Callable[[Record], str] = "",
        mandatory: bool = True,
        persistent: bool = True,
        confirm_timeout: float = 30.0,
        to_json: ToJson | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise ConfigError(f"AmqpSink needs an amqp:// URL string, not {type(url).__name__}")
        if not isinstance(exchange, str):
            raise ConfigError('exchange must be a string ("" is the default exchange)')
        if not (isinstance(routing_key, str) or callable(routing_key)):
            raise ConfigError("routing_key must be a string or a function of the record")
        if (
            isinstance(confirm_timeout, bool)
            or not isinstance(confirm_timeout, int | float)
            or not 0 < confirm_timeout < float("inf")
        ):
            raise ConfigError(
                f"confirm_timeout must be a positive number of seconds, not {confirm_timeout!r}"
            )
        self.timeout = float(confirm_timeout)
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.persistent = persistent
        self.to_json = to_json
        self._secrets = secrets_in_url(url)
        shown = redact_url(url)
        self._description = f"AmqpSink({shown!r}, exchange={exchange!r})"
        self._params = _parameters(url, shown, self._secrets)
        self._lock = threading.Lock()
        self._idle: list[_Channel] = []
        self._closed = False

    def __repr__(self) -> str:
        return self._description

    def open(self) -> None:
        """Nothing to do: the first write connects, so a broker that is down at start does not
        keep the spool from buffering."""
        self._closed = False

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections (without closing them: their
        sockets are the parent's) and take a lock of its own."""
        self._lock = threading.Lock()
        self._idle = []

    def close(self) -> None:
        """Close the idle connections; a connection busy in a write closes when it returns."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for chan in idle:
            chan.discard()

    def write(self, batch: Sequence[Record]) -> None:
        """Publish every record of the batch and wait for the broker's confirms.

        Raises:
            TransientError: connection trouble, a nack, a blocked or closing broker.
            PermanentError: every record was returned as unroutable, the exchange does not
                exist or access is refused, or no item could be encoded.
            PartialFailure: some records were returned, nacked, not reached before the
                connection failed, or could not be encoded; the others were confirmed.
        """
        if not batch:
            return
        encoded = encode_batch(batch, self.to_json)
        encoded.raise_if_all_bad(self._description)
        errors: dict[str, SinkError] = {}  # record id -> why it was not confirmed
        chan: _Channel | None = None
        sent = 0
        try:
            chan = self._borrow()
            chan.reset()
            for record, body in encoded.ok:
                chan.publish(
                    record,
                    json_utf8(body),
                    exchange=self.exchange,
                    key=self._key(record),
                    props=self._properties(record),
                    mandatory=self.mandatory,
                )
                sent += 1
            if not chan.wait(self.timeout):
                raise TimeoutError(
                    f"the broker confirmed {sent - len(chan.outstanding)} of {sent} "
                    f"message(s) within {self.timeout:g} s"
                )
        except Exception as exc:
            # not confirmed: what was in flight, and what was never sent
            error = self._map(exc)
            unsent = [record for record, _ in encoded.ok[sent:]]
            in_flight = list(chan.outstanding.values()) if chan is not None else []
            errors.update((record.id, error) for record in (*in_flight, *unsent))
            if chan is not None:
                chan.outstanding.clear()
                chan.discard()
        if chan is not None:
            nack = pika.exceptions.NackError([])
            errors.update((record.id, self._map(nack)) for record in chan.nacked)
            for record_id, code in chan.returned.items():
                errors[record_id] = self._map(pika.exceptions.UnroutableError([]), code)
            chan.reset()
            self._give_back(chan)
        failed = [(record, errors[record.id]) for record, _ in encoded.ok if record.id in errors]
        self._raise(failed, len(encoded.ok))
        encoded.raise_if_some_bad(self._description)

    def _raise(self, failed: list[tuple[Record, SinkError]], published: int) -> None:
        if not failed:
            return
        first = failed[0][1]
        if len(failed) == published and all(type(e) is type(first) for _, e in failed):
            raise first
        kinds = {type(e).__name__ for _, e in failed}
        raise carry_secrets(
            PartialFailure(
                [r.id for r, _ in failed],
                f"{len(failed)} of {published} record(s) not confirmed "
                f"({', '.join(sorted(kinds))}): {first}",
                cause=first,
                sink=self._description,
            ),
            self._secrets,
        )

    def _key(self, record: Record) -> str:
        key = self.routing_key
        return key if isinstance(key, str) else key(record)

    def _properties(self, record: Record) -> Any:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2 if self.persistent else 1,
            message_id=record.id,
            timestamp=int(record.enqueued_at),
        )

    def _borrow(self) -> _Channel:
        with self._lock:
            while self._idle:
                chan = self._idle.pop()
                if chan.usable:
                    return chan
                chan.discard()
        return _Channel(self._params)

    def _give_back(self, chan: _Channel) -> None:
        with self._lock:
            if chan.usable and not self._closed:
                self._idle.append(chan)
                return
        chan.discard()

    def _map(self, exc: BaseException, reply_code: int | None = None) -> SinkError:
        return map_amqp_error(exc, self._description, self._secrets, reply_code)


def map_amqp_error(
    exc: BaseException, sink: str, secrets: Sequence[str] = (), reply_code: int | None = None
) -> SinkError:
    """Turn a pika error into a spoolkit error: the one place AmqpSink decides.

    - ``UnroutableError`` (the broker returned a mandatory message: no queue bound):
      :class:`PermanentError`.
    - ``NackError`` (the broker could not take the message): :class:`TransientError`.
    - ``ChannelClosedByBroker`` with ``403``/``404``/``406`` (access refused, no such
      exchange, precondition failed): :class:`PermanentError`; other codes transient.
    - everything else (connection refused, reset or lost, timeouts, a broker shutting down
      (``320``), a blocked connection, a refused login): :class:`TransientError`.

    Args:
        exc: the pika (or socket) error.
        sink: the sink's redacted description.
        secrets: values to mask if the message echoes them.
        reply_code: the reply code of a returned message (``312`` NO_ROUTE).

    Returns:
        The spoolkit error to raise (chained to ``exc`` through ``__cause__``).
    """
    detail = " ".join(str(exc).split()) or "(no message)"
    permanent = False
    if isinstance(exc, pika.exceptions.UnroutableError):
        detail = "the broker returned the message: no queue is bound for its routing key"
        codes = {m.method.reply_code for m in getattr(exc, "messages", ()) if m.method}
        if reply_code is not None:
            codes.add(reply_code)
        if codes:
            detail += f" (reply code {', '.join(map(str, sorted(codes)))})"
        detail += "; bind a queue to the exchange for this routing key, then requeue"
        permanent = True
    elif isinstance(exc, pika.exceptions.NackError):
        detail = "the broker nacked the message (a queue refused or failed to store it)"
    elif isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        code = int(getattr(exc, "reply_code", 0))
        permanent = code in _REFUSED_CODES and code not in _NOT_NOW_CODES
    message = redact_text(f"{type(exc).__name__}: {detail}", secrets)
    kind = PermanentError if permanent else TransientError
    error = carry_secrets(kind(message, sink=sink), secrets)
    error.__cause__ = exc
    return error


def _parameters(url: str, shown: str, secrets: Sequence[str]) -> Any:
    """pika's ``URLParameters`` for ``url``, with the sink's fail-fast defaults."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed AMQP URL {shown!r}") from None
    if parts.scheme.lower() not in ("amqp", "amqps"):
        raise ConfigError(f"{shown!r}: an AMQP URL starts with amqp:// or amqps://")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours = sorted(set(query) & set(URL_OPTIONS))
    if ours:
        raise ConfigError(
            f"{shown!r}: {', '.join(ours)} are AmqpSink arguments, not pika options; "
            "pass them as arguments, or build the sink with from_url()"
        )
    merged = {**_PIKA_DEFAULTS, **query}
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(merged), ""))
    try:
        return pika.URLParameters(target)
    except (ValueError, TypeError, KeyError) as exc:
        detail = redact_text(str(exc), secrets)
        raise ConfigError(
            f"bad AMQP URL {shown!r}: {detail}; the query may hold pika URL options "
            "(heartbeat, socket_timeout, connection_attempts, ssl_options...) and "
            f"{', '.join(URL_OPTIONS)} (from_url only)"
        ) from None


def from_sink_url(url: str) -> AmqpSink:
    """Build an :class:`AmqpSink` from ``amqp://user:pass@host/vhost?exchange=E&routing_key=K``.

    ``exchange``, ``routing_key``, ``mandatory``, ``persistent`` and ``confirm_timeout`` are
    the sink's options;
    every other query parameter is a pika URL option and stays in the connection URL.

    Raises:
        ConfigError: a bad URL, option or value.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed AMQP URL {shown!r}") from None
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in URL_OPTIONS:
            if name in options:
                raise ConfigError(f"option {name!r} is given twice in {shown!r}")
            options[name] = value
        else:
            rest.append((name, value))
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return AmqpSink(
        target,
        exchange=options.get("exchange", ""),
        routing_key=options.get("routing_key", ""),
        mandatory=_flag("mandatory", options.get("mandatory", "true")),
        persistent=_flag("persistent", options.get("persistent", "true")),
        confirm_timeout=_seconds(options.get("confirm_timeout", "30")),
    )


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"option confirm_timeout={value!r} must be a number of seconds") from None


def _flag(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"option {name}={value!r} must be true or false (or 1/0, yes/no, on/off)")
