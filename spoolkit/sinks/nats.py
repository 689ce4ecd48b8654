"""NatsSink: publish each record to NATS JetStream, de-duplicated by record id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from spoolkit._internal.redact import MASK, carry_secrets, redact_text, redact_url, secrets_in_url
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, SinkError, TransientError
from spoolkit.serializers import _json_utf8
from spoolkit.sinks._encode import ToJson, encode_batch
from spoolkit.typing import Record

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("NatsSink needs nats-py: pip install 'spoolkit[nats]'") from exc

__all__ = [
    "URL_OPTIONS",
    "EventLoopThread",
    "NatsSink",
    "from_sink_url",
    "map_nats_error",
    "nats_secrets",
    "redact_nats_url",
]

URL_OPTIONS = ("stream", "subject", "timeout")
"""The query options of a ``nats://`` sink URL."""

T = TypeVar("T")

# JetStream API error codes that mean "not now": storage or message limits reached on a
# stream that discards new messages, resources exhausted, no meta leader (cluster election).
_NOT_NOW_ERR_CODES = frozenset({10023, 10047, 10077, 10008})


class EventLoopThread:
    """A private asyncio event loop on a daemon thread, for calling async drivers from sync code.

    nats-py is asyncio only; the spool's workers are threads. Each sink (and backend) owns one
    of these: the client lives on it, and :meth:`call` runs a coroutine there and waits for
    its result from any thread. Nothing runs on the caller's own event loop, if it has one.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``make()`` on the loop; its result, or its exception, here.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds (it is cancelled).
        """
        loop = self._ensure()

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s")
        return future.result()

    def forget(self) -> None:
        """In a forked child: the parent's loop thread does not exist here; start afresh."""
        self._lock = threading.Lock()
        self._loop = self._thread = None

    def stop(self) -> None:
        """Stop the loop and join its thread (pending callbacks are dropped)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_the_rest() -> None:  # calls in flight end now, each closing its sockets
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


def nats_secrets(url: str) -> list[str]:
    """The secrets of a NATS URL: a password, or a token given alone as ``nats://TOKEN@host``."""
    found = set(secrets_in_url(url))
    with contextlib.suppress(ValueError):
        userinfo = urlsplit(url).netloc.rpartition("@")[0]
        if userinfo and ":" not in userinfo:
            found.update((userinfo, unquote(userinfo)))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_nats_url(url: str) -> str:
    """:func:`spoolkit._internal.redact.redact_url`, with a lone token (``nats://TOKEN@host``)
    masked too."""
    shown = redact_url(url)
    with contextlib.suppress(ValueError):
        parts = urlsplit(shown)
        userinfo, sep, hostport = parts.netloc.rpartition("@")
        if sep and userinfo and ":" not in userinfo:
            shown = urlunsplit((parts.scheme, f"{MASK}@{hostport}", *parts[2:]))
    return shown


async def connect(servers: list[str], timeout: float) -> Client:
    """A nats-py client that fails fast when no server answers (the spool's retry policy waits),
    and quietly reconnects a couple of times after losing its server (then it closes, and its
    owner connects again at the next call)."""

    async def quiet(_: Exception) -> None:  # errors surface through the calls that fail
        return None

    nc = Client()
    try:
        await nc.connect(
            servers=servers,
            connect_timeout=timeout,  # type: ignore[arg-type]  # nats-py says int, means seconds
            allow_reconnect=True,
            max_reconnect_attempts=2,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # same
            error_cb=quiet,
        )
    except BaseException:  # failed or cancelled half way: no socket may stay open
        with contextlib.suppress(Exception):
            await asyncio.shield(nc.close())
        raise
    return nc


class NatsSink:
    """Publish each record to a NATS JetStream subject, with ``Nats-Msg-Id`` = ``record.id``.

    JetStream drops a message whose ``Nats-Msg-Id`` it saw within the stream's duplicate
    window (two minutes by default, the stream's ``duplicate_window``): a batch that is
    redelivered (its acknowledgement was lost in a crash) lands once. Within that window,
    delivery is exactly once; beyond it, at least once.

    Each message's payload is the record as JSON (``{"id", "enqueued_at", "item"}`` or what
    ``to_json`` returns). The batch is published in order, without waiting between messages,
    and ``write`` returns once JetStream acknowledged every message (stored it, replicated
    per the stream's settings).

    nats-py is asyncio only: the sink runs its client on a private event loop in a thread of
    its own (started by the first write, stopped by ``close()``), so it works from the spool's
    worker threads and from programs that never use asyncio. The sink is thread-safe.

    Errors map in :func:`map_nats_error`: connection trouble, timeouts, JetStream unavailable
    or full, and no stream listening on the subject are :class:`TransientError`; other
    JetStream API errors (``stream`` names another stream than the subject's) and a message
    over the server's ``max_payload`` are :class:`PermanentError`. When only some messages
    of a batch were acknowledged, :class:`PartialFailure` names the others.

    Args:
        url: ``nats://host:4222`` (``nats://user:pass@host``, ``nats://TOKEN@host``,
            ``tls://host``), or several servers separated by commas.
        subject: the subject to publish to (a stream must capture it).
        stream: the stream expected to store the messages (sent as
            ``Nats-Expected-Stream``; JetStream refuses a message its subject routes elsewhere).
        timeout: seconds to wait for a connection and for each acknowledgement.
        to_json: maps a record to the JSON-safe payload.

    Raises:
        ConfigError: an empty subject, a bad timeout or URL.
    """

    def __init__(
        self,
        url: str,
        subject: str,
        *,
        stream: str | None = None,
        timeout: float = 10.0,
        to_json: ToJson | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("NatsSink needs a nats:// URL string")
        if not isinstance(subject, str) or not subject or any(c in subject for c in " \t\r\n"):
            raise ConfigError(f"subject must be a non-empty NATS subject, not {subject!r}")
        if stream is not None and (not isinstance(stream, str) or not stream):
            raise ConfigError("stream must be a non-empty stream name, or None")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.subject = subject
        self.stream = stream
        self.timeout = float(timeout)
        self.to_json = to_json
        self._servers = _servers(url)
        self._secrets = nats_secrets(url)
        self._description = f"NatsSink({redact_nats_url(url)!r}, subject={subject!r}" + (
            f", stream={stream!r})" if stream else ")"
        )
        self._loop = EventLoopThread("spoolkit-nats-sink")
        self._nc: Client | None = None
        self._connecting: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return self._description

    def open(self) -> None:
        """Nothing to do: the first write connects, so a server that is down at start does not
        keep the spool from buffering."""

    def after_fork(self) -> None:
        """In a forked child: forget the parent's loop thread and client (the child has neither
        the thread nor the right to close the parent's socket); the next write starts afresh."""
        self._loop.forget()
        self._nc = None
        self._connecting = None

    def close(self) -> None:
        """Close the connection (flushing what it buffered) and stop the loop thread."""
        if self._nc is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                self._loop.call(self._close, self.timeout)
        self._loop.stop()
        self._nc = None
        self._connecting = None

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    def write(self, batch: Sequence[Record]) -> None:
        """Publish every record and wait for JetStream's acknowledgements.

        Raises:
            TransientError: connection trouble, a timeout, JetStream unavailable or full, no
                stream listening on the subject.
            PermanentError: JetStream refused every message (another stream than expected, a
                message too large), or no item could be encoded.
            PartialFailure: some messages were not acknowledged, or some items could not be
                encoded; the others were stored.
        """
        if not batch:
            return
        encoded = encode_batch(batch, self.to_json)
        encoded.raise_if_all_bad(self._description)
        messages = [(r, _json_utf8(body)) for r, body in encoded.ok]
        # one deadline for the batch: connecting plus the acknowledgements, plus a margin
        try:
            outcomes = self._loop.call(lambda: self._publish(messages), self.timeout * 2 + 5)
        except Exception as exc:  # the connection, or the loop: the whole batch failed
            raise self._map(exc) from exc
        failed = [(r, self._map(o)) for (r, _), o in zip(messages, outcomes, strict=True) if o]
        if failed:
            first = failed[0][1]
            if len(failed) == len(messages) and all(type(e) is type(first) for _, e in failed):
                raise first
            raise carry_secrets(
                PartialFailure(
                    [r.id for r, _ in failed],
                    f"{len(failed)} of {len(messages)} message(s) not acknowledged: {first}",
                    cause=first,
                    sink=self._description,
                ),
                self._secrets,
            )
        encoded.raise_if_some_bad(self._description)

    async def _client(self) -> Client:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            nc = self._nc
            if nc is None or nc.is_closed:
                self._nc = nc = await asyncio.wait_for(
                    connect(self._servers, self.timeout), self.timeout + 1
                )
            return nc

    async def _publish(self, messages: list[tuple[Record, bytes]]) -> list[Exception | None]:
        nc = await self._client()
        js = nc.jetstream(timeout=self.timeout)

        async def one(record: Record, payload: bytes) -> None:
            await js.publish(
                self.subject,
                payload,
                stream=self.stream,
                headers={"Nats-Msg-Id": record.id},
            )

        # gather starts the publishes in batch order: they go out on the wire in that order
        results = await asyncio.gather(*(one(r, p) for r, p in messages), return_exceptions=True)
        out: list[Exception | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # CancelledError and friends: not a delivery outcome
            out.append(result)
        return out

    def _map(self, exc: BaseException) -> SinkError:
        return map_nats_error(exc, self._description, self._secrets)


def map_nats_error(exc: BaseException, sink: str, secrets: Sequence[str] = ()) -> SinkError:
    """Turn a nats-py error into a spoolkit error: the one place NatsSink decides.

    - ``MaxPayloadError`` (a message over the server's ``max_payload``): :class:`PermanentError`.
    - a JetStream API error: :class:`TransientError` when it means "not now" (status 503
      or 5xx, a stream full with ``discard: new``, resources exhausted, no meta leader),
      :class:`PermanentError` otherwise (``stream`` names a stream the subject is not in).
    - "no responders" (no stream captures the subject, or JetStream is not up yet after a
      restart or an election): :class:`TransientError`, so nothing is dead-lettered during a
      cluster restart; the spool keeps it until a stream listens.
    - everything else (connection refused, lost or closed, timeouts, authorization failures,
      a slow or draining connection): :class:`TransientError`.

    Args:
        exc: the nats-py (or asyncio) error.
        sink: the sink's redacted description.
        secrets: values to mask if the message echoes them.

    Returns:
        The spoolkit error to raise (chained to ``exc`` through ``__cause__``).
    """
    detail = " ".join(str(exc).split()) or "(no message)"
    permanent = False
    if isinstance(exc, nats.errors.MaxPayloadError):
        permanent = True
    elif isinstance(exc, nats.js.errors.NoStreamResponseError):
        detail = "no JetStream stream answered for the subject (no stream captures it, or "
        detail += "JetStream is not available yet); create the stream, the records wait"
    elif isinstance(exc, nats.js.errors.APIError):
        code = int(exc.code or 0)
        err_code = int(exc.err_code or 0)
        permanent = not (code >= 500 or err_code in _NOT_NOW_ERR_CODES)
    message = redact_text(f"{type(exc).__name__}: {detail}", secrets)
    kind = PermanentError if permanent else TransientError
    error = carry_secrets(kind(message, sink=sink), secrets)
    error.__cause__ = exc
    return error


def _servers(url: str) -> list[str]:
    servers = [s.strip() for s in url.split(",") if s.strip()]
    for server in servers:
        try:
            parts = urlsplit(server)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(f"malformed NATS URL {redact_nats_url(server)!r}") from None
        if parts.scheme.lower() not in ("nats", "tls", "ws", "wss") or not parts.hostname:
            raise ConfigError(
                f"{redact_nats_url(server)!r}: a NATS server URL is nats://host:4222 "
                "(or tls://, ws://, wss://)"
            )
    if not servers:
        raise ConfigError("NatsSink needs at least one nats:// server URL")
    return [urlunsplit((*urlsplit(s)[:3], "", "")) for s in servers]


def from_sink_url(url: str, options: Mapping[str, str] | None = None) -> NatsSink:
    """Build a :class:`NatsSink` from ``nats://host:4222?stream=S&subject=X&timeout=10``.

    Args:
        url: the URL; its query holds the options unless ``options`` is given.
        options: the decoded query options (``subject`` required, ``stream``, ``timeout``).

    Raises:
        ConfigError: no subject, an unknown option or a bad value.
    """
    shown = redact_nats_url(url)
    if options is None:
        from urllib.parse import parse_qsl  # noqa: PLC0415 - only for a URL given whole

        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        names = [n for n, _ in pairs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"option(s) {', '.join(twice)} given twice in {shown!r}")
        options = dict(pairs)
    unknown = sorted(set(options) - set(URL_OPTIONS))
    accepted = "subject (required), stream, timeout"
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} in {shown!r}; accepted: {accepted}"
        )
    subject = options.get("subject", "")
    if not subject:
        raise ConfigError(f"{shown!r} needs the subject= option; accepted: {accepted}")
    timeout = 10.0
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            raise ConfigError(f"option timeout={options['timeout']!r} must be a number") from None
    parts = urlsplit(url)
    return NatsSink(
        urlunsplit((*parts[:3], "", "")),
        subject,
        stream=options.get("stream") or None,
        timeout=timeout,
    )
