"""What keeps ``spoolkit drain`` from emptying a spool into dead letters when the sink is wrong.

A drain is one operator command aimed at one destination, often typed by hand: a typo in the
URL, a server that is down or a path it does not serve must leave the backlog where it is.

- :func:`reachable` checks, before anything is taken, that the sink's host accepts a TCP
  connection (network sinks) and opens the sink.
- :class:`Guard` wraps the sink. Until one batch has been delivered the sink is unproven: a
  definitive refusal (:class:`~spoolkit.errors.PermanentError`) stops the drain at once, and
  passing failures are retried without ever being dead-lettered. Afterwards the spool's retry
  policy applies, but once :data:`SAME_FAILURES` failures in a row (any batch) fail the same
  way with no delivery between, the drain stops: the batches in flight go back to the spool.
  With ``dead_letter=False`` a batch that would be dead-lettered stops the drain instead.
- :func:`retrying` is the spool's retry policy with one change: a batch the guard holds is
  never given up (its worker waits in backoff until the drain stops, then puts it back).
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import tenacity

from spoolkit._internal.redact import redact_url
from spoolkit.errors import PartialFailure, PermanentError, TransientError
from spoolkit.retry import RetryPolicy
from spoolkit.typing import Record

__all__ = ["SAME_FAILURES", "Guard", "Held", "reachable", "retrying"]

SAME_FAILURES = 5
"""Failures in a row, all alike and with no delivery between, that stop a drain."""

_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "postgres": 5432}
_PORTS["postgresql"] = 5432


class Held(TransientError):
    """A batch the guard keeps from the sink or from the dead letters: it goes back to the
    spool when the drain stops."""


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """Why the sink at ``url`` cannot be reached (a sentence), or None when its host accepts a
    TCP connection or the URL names no network host (files, stdout, Unix sockets, a proxy)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        return None
    try:
        host, port = parts.hostname, parts.port or _PORTS[scheme]
    except ValueError as exc:  # a port that is not a number
        return f"{redact_url(url)} has a bad port: {exc}"
    if not host or host.startswith("/") or (scheme.startswith("http") and _proxied(url)):
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"cannot connect to {host}:{port} ({reason})"
    return None


def _proxied(url: str) -> bool:
    """Whether an HTTP client honouring the environment would go through a proxy."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme.lower()) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _signature(exc: BaseException) -> str:
    """What makes two failures "the same": the error type and its first line, digits of a
    request id or a time aside (an HTTP status and its reason are kept)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:80]}"


class Guard:
    """The sink of a drain, watched: see the module docstring.

    Args:
        sink: the sink to deliver to (its ``write``, ``open`` and ``close`` are used).
        dead_letter: False: a batch that would be dead-lettered stops the drain instead.
        same_failures: failures in a row, alike, that stop the drain.
    """

    def __init__(
        self, sink: Any, *, dead_letter: bool = True, same_failures: int = SAME_FAILURES
    ) -> None:
        self.sink = sink
        self.dead_letter = dead_letter
        self.same_failures = same_failures
        self.proven = False
        """Whether a batch was delivered (the sink is reachable and accepts records)."""
        self.stopped: str | None = None
        """Why the drain must stop (a sentence), once it must."""
        self.failures = 0
        """Failures of sink calls, in all."""
        self._streak = 0
        self._last = ""
        self._lock = threading.Lock()
        self._opened = False
        self.changed = threading.Event()
        """Set when :attr:`stopped` is."""

    def __repr__(self) -> str:
        return repr(self.sink)

    def open(self) -> None:
        """Open the sink, once (the drain opens it to check it, the Spool again at start)."""
        if self._opened:
            return
        opener = getattr(self.sink, "open", None)
        if callable(opener):
            opener()
        self._opened = True

    def close(self) -> None:
        """Close the sink."""
        closer = getattr(self.sink, "close", None)
        if callable(closer):
            closer()

    def stop(self, why: str) -> None:
        """Stop the drain for the reason ``why`` (the first reason given is kept)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = why
        self.changed.set()

    def write(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch``; see the module docstring for what a failure does.

        Raises:
            Held: the drain stops (or, unproven sink, a passing failure): the batch stays.
            Exception: the sink's own error, for the retry policy to decide on.
        """
        if self.stopped is not None:
            raise Held(f"the drain is stopping: {self.stopped}")
        write = getattr(self.sink, "write", None) or self.sink
        try:
            write(batch)
        except PartialFailure:
            self._success()  # some records went through: the sink works
            raise
        except Exception as exc:
            self._failure(exc)
        else:
            self._success()

    def _success(self) -> None:
        with self._lock:
            self.proven = True
            self._streak = 0
            self._last = ""

    def _failure(self, exc: Exception) -> None:
        """Count ``exc``; raise :class:`Held` when the batch must stay, else ``exc`` itself."""
        sig = _signature(exc)
        with self._lock:
            self.failures += 1
            self._streak = self._streak + 1 if sig == self._last else 1
            self._last = sig
            streak, proven = self._streak, self.proven
        if not proven and isinstance(exc, PermanentError):
            self.stop(f"the sink refused the first batch: {exc}")
        elif streak >= self.same_failures:
            self.stop(f"{streak} deliveries in a row failed the same way: {exc}")
        elif isinstance(exc, PermanentError) and not self.dead_letter:
            self.stop(f"a batch was refused and --no-dead-letter keeps it: {exc}")
        if self.stopped is not None or not proven:
            raise Held(str(exc), retry_after=getattr(exc, "retry_after", None)) from exc
        raise exc


def retrying(policy: RetryPolicy, guard: Guard) -> tenacity.Retrying:
    """``policy`` as a ``tenacity.Retrying`` that never gives up a batch the guard holds, and
    that stops the drain instead of giving a batch up when dead letters are off."""
    base = policy.build()
    base_stop = base.stop

    def stop(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Held):
            return False
        if not base_stop(state):
            return False
        if guard.dead_letter:
            return True
        guard.stop(
            f"a batch failed {state.attempt_number} time(s) and --no-dead-letter keeps it: {exc}"
        )
        return False

    retry = tenacity.retry_if_exception_type(Held) | base.retry
    return base.copy(stop=stop, retry=retry)
