"""What the NATS sink and the NATS backend share: nats-py's client on a private event loop
thread, its connection, its URL's secrets, and how its errors map to spoolkit's (so neither
layer imports the other)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from spoolkit._internal.redact import MASK, carry_secrets, redact_text, redact_url, secrets_in_url
from spoolkit.errors import ConfigError, PermanentError, SinkError, TransientError

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the NATS integrations need nats-py: pip install 'spoolkit[nats]'") from exc

__all__ = [
    "EventLoopThread",
    "connect",
    "map_nats_error",
    "nats_secrets",
    "redact_nats_url",
    "servers",
]

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


def map_nats_error(exc: BaseException, sink: str, secrets: Sequence[str] = ()) -> SinkError:
    """Turn a nats-py error into a spoolkit error: the one place the NATS sink and backend decide.

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


def servers(url: str) -> list[str]:
    """The server URLs in ``url`` (comma-separated), each without its query and fragment.

    Raises:
        ConfigError: a malformed URL, another scheme, or no server.
    """
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
