"""``spoolkit.SpoolProcessor``: a structlog processor that puts each event dict into a spool.

Place it after the processors that shape the event (``add_log_level``, ``TimeStamper``,
``format_exc_info``...) and before the renderer. With ``drop=False`` the event goes on to the
renderer too (console and spool at once); with ``drop=True`` it ends in the spool.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import traceback
from asyncio import _get_running_loop
from collections.abc import MutableMapping
from typing import Any

import structlog

from spoolkit._internal.guard import guard
from spoolkit.errors import ClosedError, ConfigError
from spoolkit.producers.logging_handler import bounded_put, json_safe, loop_safe_put
from spoolkit.spool.lifecycle import exiting

__all__ = ["SpoolProcessor"]

_format_exc_info = structlog.processors.format_exc_info


class SpoolProcessor:
    """A structlog processor that spools a JSON-safe copy of every event dict.

    The copy is taken when the processor runs, so later processors (renderers that pop keys)
    do not change what was spooled. Values are made JSON-safe as by
    :func:`spoolkit.producers.logging_handler.json_safe`: timestamps, bound context and
    exception text (from ``format_exc_info`` or ``dict_tracebacks``) arrive as they are. An
    ``exc_info`` still in the event (no ``format_exc_info`` before this processor) is formatted
    into ``exception`` text in the copy; the event passed on keeps it.

    The processor never raises into the application: a full spool (no room within
    ``put_timeout``) counts in :attr:`dropped`; any other failure counts in :attr:`errors`,
    is kept in :attr:`last_error` and, like ``logging.Handler.handleError``, printed to stderr.
    An event that could not be spooled is still passed on (or dropped) as configured.

    In a coroutine (a thread running an asyncio event loop) the processor never blocks the
    loop: it does not wait for room (a full spool drops the event at once, counted in
    :attr:`dropped`), and a put that may wait on I/O (``fsync="always"``, a Redis or NATS
    backend) is handed, in order, to a thread of the processor's own (:meth:`close` waits
    for those). structlog's ``await log.ainfo(...)`` runs the processors on a thread of the
    loop's executor, where the put waits up to ``put_timeout`` as anywhere else.

    Args:
        spool: the :class:`spoolkit.Spool` (or anything with ``put``).
        drop: raise :class:`structlog.DropEvent` after spooling, ending the event here.
        put_timeout: the most seconds to wait for room in a full spool.

    Raises:
        ConfigError: ``spool`` has no ``put``, or ``put_timeout`` is negative.
    """

    def __init__(self, spool: Any, *, drop: bool = False, put_timeout: float = 0.1) -> None:
        if not callable(getattr(spool, "put", None)):
            raise ConfigError(f"SpoolProcessor needs a spool with put(), got {spool!r}")
        if put_timeout < 0:
            raise ConfigError(f"put_timeout must be >= 0 seconds, got {put_timeout!r}")
        self.spool = spool
        self.drop = drop
        self.put_timeout = put_timeout
        self.dropped = 0
        self.errors = 0
        self.skipped = 0
        self.last_error: BaseException | None = None
        self._put = bounded_put(spool, put_timeout)
        self._loop_put = loop_safe_put(spool, put_timeout, self._drop_later, self._fail_later)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Spool a copy of ``event_dict``, then return it (or raise ``DropEvent``)."""
        g = guard
        if g.active:  # logged from inside a producer of this thread: it would re-enter the spool
            self.skipped += 1
        else:
            g.active = True
            try:
                event = event_dict
                if "exc_info" in event:
                    event = _format_exc_info(logger, method_name, dict(event))
                put = self._put if _get_running_loop() is None else self._loop_put
                put(json_safe(event if type(event) is dict else dict(event)))
            except queue.Full:
                self.dropped += 1
            except ClosedError as exc:
                self.dropped += 1
                if not exiting():  # at exit (the spool stopped by its hook): counted, not shown
                    self.errors += 1
                    self.last_error = exc
                    _report(exc)
            except Exception as exc:
                self.errors += 1
                self.last_error = exc
                _report(exc)
            finally:
                g.active = False
        if self.drop:
            raise structlog.DropEvent
        return event_dict

    def _drop_later(self) -> None:
        self.dropped += 1  # a put handed off the event loop found no room in time

    def _fail_later(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = exc
        if not (isinstance(exc, ClosedError) and exiting()):
            _report(exc)

    def close(self) -> None:
        """Wait for the puts handed off an event loop (``fsync="always"`` spools); the spool
        itself is not stopped."""
        self._loop_put.close()

    def __repr__(self) -> str:
        return f"<SpoolProcessor drop={self.drop} spool={self.spool!r}>"


def _report(exc: BaseException) -> None:
    with contextlib.suppress(Exception):  # stderr itself may be gone
        sys.stderr.write("--- spoolkit.SpoolProcessor could not spool an event ---\n")
        traceback.print_exception(exc, file=sys.stderr)
