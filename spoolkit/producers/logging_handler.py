"""``spoolkit.SpoolHandler``: a stdlib ``logging.Handler`` that puts each record into a spool.

Each ``LogRecord`` becomes a JSON-safe dict (see :func:`record_to_dict`) built without any JSON
round-trip: values are checked by type, with a fast path for ``str``/``int``/``float``/``bool``/
``None``, recursion for dicts, lists and tuples, and ``repr`` for anything else.

Loops are avoided three times over. A thread-local guard (:mod:`spoolkit._internal.guard`) drops any
record emitted while this thread is inside a spoolkit producer (the spool's own code, a
serializer, a sink factory), which could otherwise re-enter the spool's lock, and every record
emitted on spoolkit's own threads: what a sink library logs while delivering (httpx's
"HTTP Request: POST", psycopg, redis), at any level and whatever loggers the application
configured, is never spooled, so a delivery cannot cause another one. And, by default, records
of the ``spoolkit`` logger hierarchy are not spooled at all: they describe the spool (retries,
dead letters), and feeding them back into it would turn one failing sink into a growing stream
of records about itself (spoolkit's last-resort handler still shows its warnings on stderr
when no other handler would, see :mod:`spoolkit._internal.log`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import math
import os
import queue
import sys
import time
from asyncio import _get_running_loop
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from spoolkit._internal.guard import guard
from spoolkit._internal.imports import build_reference, is_reference, resolve_reference
from spoolkit.errors import ClosedError, ConfigError, RecordTooLargeError
from spoolkit.producers._loop import LoopSafePut
from spoolkit.producers._record_json import record_json
from spoolkit.queue.meta import read_meta
from spoolkit.spool.lifecycle import exiting

__all__ = ["SpoolHandler", "json_safe", "record_to_dict", "resolve_sink", "utc_iso"]


class _Spool(Protocol):
    """What a producer needs from a spool: ``put`` (and ``stop`` when it owns the spool)."""

    def put(self, item: Any) -> None: ...  # pragma: no cover


# -- record -> dict ----------------------------------------------------------------------------

_BLANK = logging.LogRecord("", 0, "", 0, "", (), None)
_BASE_LEN = len(_BLANK.__dict__)
# Attributes every LogRecord has, plus those formatters add: anything else came from `extra=`.
_STANDARD = frozenset(_BLANK.__dict__) | {"message", "asctime", "taskName"}
_SCALARS = frozenset({str, int, bool, type(None)})
_MAX_DEPTH = 32  # deeper nesting is stored as its repr
_EXC_FORMATTER = logging.Formatter()
_second: list[tuple[int, str]] = [(-1, "")]  # (second, "YYYY-MM-DDTHH:MM:SS."), swapped whole


def utc_iso(created: float) -> str:
    """``created`` (seconds since the epoch) as UTC ISO-8601 with microseconds and a ``Z``.

    The form of structlog's ``TimeStamper(fmt="iso", utc=True)``, e.g.
    ``2024-05-01T12:00:00.123456Z``. The part up to the second is cached.
    """
    sec = int(created)
    cached = _second[0]
    if sec != cached[0]:
        cached = _second[0] = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return "%s%06dZ" % (cached[1], (created - sec) * 1e6)  # noqa: UP031 - cheapest form, per record


def json_safe(value: Any, _depth: int = 0) -> Any:  # noqa: PLR0911 - one return per type
    """Return ``value`` if JSON holds it as it is, else a JSON-safe copy.

    ``str``, ``int``, ``bool``, ``None`` and finite floats pass untouched (NaN and infinities
    become ``"nan"``/``"inf"``/``"-inf"``); dicts get ``str`` keys (``str(key)``) and safe
    values; lists and tuples become lists; subclasses of ``str``/``int``/``float`` (enums and the
    like) become the plain value; anything else, and nesting deeper than 32, becomes its ``repr``.
    """
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is float:
        return value if math.isfinite(value) else repr(value)
    if _depth >= _MAX_DEPTH:
        return _repr(value)
    if cls is dict:
        d = _depth + 1
        return {
            (k if type(k) is str else str(k)): (v if type(v) in _SCALARS else json_safe(v, d))
            for k, v in value.items()
        }
    if cls is list or cls is tuple:
        d = _depth + 1
        return [v if type(v) in _SCALARS else json_safe(v, d) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return json_safe(float.__float__(value))
    return _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the record
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"


def record_to_dict(record: logging.LogRecord, message: str | None = None) -> dict[str, Any]:
    """Turn ``record`` into the JSON-safe dict a :class:`SpoolHandler` spools.

    Args:
        record: the stdlib record.
        message: the message to store; ``record.getMessage()`` (args applied) when ``None``.

    Returns:
        ``timestamp`` (UTC ISO-8601), ``level``, ``logger``, ``message``, ``module``,
        ``function``, ``line``, ``process``, ``thread``, ``exception`` and ``stack`` (text, or
        ``None``) and ``extra`` (the ``extra=`` fields made JSON-safe; ``{}`` when none).
    """
    attrs = record.__dict__
    extra: dict[str, Any] = {}
    if len(attrs) > _BASE_LEN:  # more than the standard attributes: extra= (or a formatter's)
        std = _STANDARD
        extra = {
            k: (v if type(v) in _SCALARS else json_safe(v, 1))
            for k, v in attrs.items()
            if k not in std
        }
    exc = record.exc_text
    if not exc and record.exc_info and record.exc_info[0] is not None:
        exc = record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)  # as Formatter
    return {
        "timestamp": utc_iso(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage() if message is None else message,
        "module": record.module,
        "function": record.funcName,
        "line": record.lineno,
        "process": record.process,
        "thread": record.thread,
        "exception": exc or None,
        "stack": record.stack_info,
        "extra": extra,
    }


def truncate(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """``data`` with each of ``message``, ``exception`` and ``stack`` cut to ``limit``
    characters (a marker ends each cut field) and ``truncated`` naming their original lengths.

    Returns ``data`` itself, unchanged, when no field is over the limit.
    """
    cut: dict[str, int] = {}
    for key in ("message", "exception", "stack"):
        value = data.get(key)
        if isinstance(value, str) and len(value) > limit:
            cut[key] = len(value)
            data[key] = f"{value[:limit]}... [truncated by spoolkit: {len(value)} chars]"
    if cut:
        data["truncated"] = cut
    return data


def _shrink(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """A last resort for a record still over the spool's size limit: ``extra`` becomes its
    clipped ``repr`` and the text fields are cut to a tenth of ``limit``."""
    extra = repr(data.get("extra"))
    data["extra"] = {"truncated_extra": extra[: limit // 10]}
    data = truncate(data, limit // 10)
    data.setdefault("truncated", {})["extra"] = len(extra)
    return data


def is_spoolkit_logger(name: str) -> bool:
    """Whether ``name`` is ``spoolkit`` or one of its children."""
    return name.startswith("spoolkit") and (len(name) == 8 or name[8] == ".")


# -- plain-value configuration -----------------------------------------------------------------


def resolve_sink(sink: Any) -> Any:
    """Turn a plain-value sink description into a sink.

    A string with ``://`` goes to :func:`spoolkit.sinks.from_url`; ``"pkg.module:name"`` is
    imported, then called with no arguments if it is a class or a callable without ``write``
    (a factory), else used as it is. Anything else is returned unchanged.

    Raises:
        ConfigError: the string is neither a URL nor an importable ``pkg.module:name``.
    """
    if not isinstance(sink, str):
        return sink
    if "://" in sink:
        # imported when asked for, so that a handler made without a URL never loads the sinks
        return importlib.import_module("spoolkit.sinks").from_url(sink)
    if not is_reference(sink):
        raise ConfigError(f"sink {sink!r} is neither a URL ('scheme://...') nor 'pkg.module:name'")
    return build_reference(sink, "write")


def loop_safe_put(
    spool: Any,
    timeout: float,
    dropped: Callable[[], None],
    failed: Callable[[BaseException], None],
) -> LoopSafePut:
    """The put a producer uses on a thread running an event loop (see
    :mod:`spoolkit.producers._loop`): no wait for room; a put that may wait on I/O (a spool
    with ``fsync="always"`` or a network backend) handed to a thread of the producer's own."""
    return LoopSafePut(
        bounded_put(spool, timeout),
        bounded_put(spool, 0.0),
        offload=not getattr(spool, "cheap_puts", True),
        dropped=dropped,
        failed=failed,
    )


def bounded_put(spool: Any, timeout: float) -> Callable[[Any], None]:
    """``spool.put`` that waits at most ``timeout`` seconds for room, raising ``queue.Full``."""
    prepare = getattr(spool, "putter", None)  # a spoolkit.Spool: ready for its configuration
    if callable(prepare):
        return prepare(timeout)  # type: ignore[no-any-return]
    put: Callable[..., None] = spool.put
    try:
        params = inspect.signature(put).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the plain signature
        params = {}  # type: ignore[assignment]
    if "timeout" in params:
        return functools.partial(put, timeout=timeout)
    if getattr(spool, "when_full", "block") != "block":
        return put  # "raise" or a dropping policy never waits
    full = getattr(spool, "full", None)
    if not callable(full):
        return put  # no way to bound the wait: documented for spools without put(timeout=)

    def guarded(item: Any) -> None:
        if full():
            raise queue.Full
        put(item)

    return guarded


# -- the handler -------------------------------------------------------------------------------


class SpoolHandler(logging.Handler):
    """A ``logging.Handler`` that puts every record, as a JSON-safe dict, into a spool.

    The dict's keys are documented in :func:`record_to_dict`. ``message`` is
    ``record.getMessage()``; if a formatter was set with :meth:`setFormatter`, ``message`` is
    what it formats instead (and the formatter is the only extra cost).

    :meth:`emit` never raises into the application: a full spool (no room within
    ``put_timeout``) counts in :attr:`dropped`, any other failure counts in :attr:`errors` and
    goes to :meth:`handleError`. Records skipped by the loop guard count in :attr:`skipped`.

    Cost per record: building the dict plus ``spool.put`` (a serialization and one copy into
    the page cache). Durability follows the spool's ``fsync`` setting.

    In a coroutine (a thread running an asyncio event loop) :meth:`emit` never blocks the
    loop: it does not wait for room (a full spool drops the record at once, counted in
    :attr:`dropped`), and a put that may wait on I/O (``fsync="always"``, a Redis or NATS
    backend) is handed, in order, to a thread of the handler's own; :meth:`close` waits for
    those. Elsewhere nothing changes.

    Args:
        spool_or_path: a spool (used as is, not started, not stopped), or a directory (a
            :class:`spoolkit.Spool` is created there with ``sink`` and ``spool_options``,
            started now and stopped by :meth:`close`), or ``"pkg.module:factory"`` returning a
            spool.
        level: the handler's level.
        sink: with a path, the sink: an object, a URL (``spoolkit.sinks.from_url``) or
            ``"pkg.module:name"`` (see :func:`resolve_sink`).
        put_timeout: the most seconds :meth:`emit` waits for room in a full spool before
            dropping the record (0 on a thread running an event loop).
        include_spoolkit_logs: spool the ``spoolkit`` loggers' own records too. Off by default:
            a failing sink would otherwise feed records about itself back into the spool.
        own_spool: stop the spool on :meth:`close`; by default only a spool made from a path.
        close_timeout: seconds :meth:`close` lets an owned spool deliver what it holds. At a
            normal interpreter exit ``logging.shutdown`` closes the handler: what was logged
            is delivered within this time when the sink answers, and stays on disk otherwise.
        max_field_chars: ``message``, ``exception`` and ``stack`` longer than this are cut,
            ending in a marker, and the record's ``truncated`` field keeps their original
            lengths: an oversized record is shortened, never dropped. A record still over the
            spool's size limit has its ``extra`` replaced by a clipped ``repr``.
        spool_options: keyword arguments for the :class:`spoolkit.Spool` made from a path
            (``workers``, ``fsync``, ``max_bytes``, ``consume``...). The serializer is
            ``"json"`` unless given here (or unless the directory already holds a spool
            written with another one, which is kept).

    Processes: the handler may be made before ``os.fork()`` (gunicorn ``--preload``, uwsgi,
    Celery prefork, ``multiprocessing``): each child writes to a lane of its own and, unless
    ``consume=False``, delivers it. Any number of processes may open the same path.

    Raises:
        ConfigError: a path without a sink, options given with a ready spool, a bad sink string.
    """

    def __init__(
        self,
        spool_or_path: Any,
        level: int | str = logging.NOTSET,
        *,
        sink: Any = None,
        put_timeout: float = 0.1,
        include_spoolkit_logs: bool = False,
        own_spool: bool | None = None,
        close_timeout: float = 5.0,
        max_field_chars: int = 256 * 1024,
        spool_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(level)
        # set before anything can fail: logging.shutdown() closes even a half-built handler
        self.owns_spool = False
        self._closed = False
        if put_timeout < 0:
            raise ConfigError(f"put_timeout must be >= 0 seconds, got {put_timeout!r}")
        if max_field_chars < 64:
            raise ConfigError(f"max_field_chars must be >= 64, got {max_field_chars!r}")
        self.max_field_chars = max_field_chars
        self.truncated = 0
        spool, created = _open_spool(spool_or_path, sink, spool_options)
        self.spool: Any = spool
        self.owns_spool = created if own_spool is None else own_spool
        if self.owns_spool and hasattr(spool, "exit_owner"):
            spool.exit_owner = self  # logging.shutdown closes this handler, which stops it
        self.put_timeout = put_timeout
        self.close_timeout = close_timeout
        self.include_spoolkit_logs = include_spoolkit_logs
        self.dropped = 0
        self.errors = 0
        self.skipped = 0
        self._put = bounded_put(spool, put_timeout)
        self._loop_put = loop_safe_put(spool, put_timeout, self._drop_later, self._fail_later)
        # a spool storing JSON with the built-in serializer takes the record's JSON text as is
        self._json_text = getattr(spool, "serializer_name", None) == "json"

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter ``record``, then :meth:`emit` it without taking the handler lock.

        The spool's ``put`` is thread-safe, so concurrent threads need not queue up here.
        """
        if not self.filters:  # the common case: no call to filter() at all
            self.emit(record)
            return True
        rv = self.filter(record)
        if not rv:
            return False
        self.emit(rv if isinstance(rv, logging.LogRecord) else record)  # 3.12: a filter's copy
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Put ``record`` into the spool as a dict; never raises (see the class docstring)."""
        g = guard
        if g.active:
            self.skipped += 1
            return
        g.active = True
        try:
            name = record.name
            if (
                name.startswith("spoolkit")  # cheap first test, false for almost every record
                and not self.include_spoolkit_logs
                and is_spoolkit_logger(name)
            ):
                self.skipped += 1
                return
            fmt = self.formatter
            data = record_to_dict(record, None if fmt is None else fmt.format(record))
            limit = self.max_field_chars
            if (len(data["message"]) > limit or record.exc_info or record.stack_info) and (
                "truncated" in truncate(data, limit)
            ):
                self.truncated += 1
                cut = True
                item: Any = data  # a key record_json does not know: the generic encoder
            else:
                cut = False
                item = record_json(data) if self._json_text else data
            put = self._put if _get_running_loop() is None else self._loop_put
            try:
                put(item)
            except RecordTooLargeError as exc:
                self.truncated += not cut  # a record cut already counts once
                put(_shrink(data, min(limit, exc.limit)))
        except queue.Full:
            self.dropped += 1
        except ClosedError:
            self.dropped += 1
            if not (self._closed or exiting()):  # after close or at exit: counted, not printed
                self.errors += 1
                self.handleError(record)
        except Exception:
            self.errors += 1
            self.handleError(record)
        finally:
            g.active = False

    def _drop_later(self) -> None:
        self.dropped += 1  # a put handed off the event loop found no room in time

    def _fail_later(self, exc: BaseException) -> None:
        """A put handed off the event loop failed: counted, and reported on stderr."""
        self.errors += 1
        if isinstance(exc, ClosedError) and (self._closed or exiting()):
            return
        if logging.raiseExceptions and sys.stderr is not None:
            with contextlib.suppress(Exception):
                sys.stderr.write(f"spoolkit.SpoolHandler could not spool a record: {exc!r}\n")

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a record that could not be spooled on stderr, briefly.

        Like ``logging.Handler.handleError`` (nothing when ``logging.raiseExceptions`` is
        false), but the record's message and arguments are clipped to a few hundred
        characters: a 65 MiB message is not printed whole.
        """
        if not logging.raiseExceptions or sys.stderr is None:
            return
        exc = sys.exc_info()[1]
        with contextlib.suppress(Exception):  # stderr itself is gone: nothing else to tell
            sys.stderr.write(
                "--- Logging error ---\nspoolkit.SpoolHandler could not spool a record: "
                f"{_clip(repr(exc), 1000)}\n"
                f"logger={record.name!r} level={record.levelname} "
                f"at {record.pathname}:{record.lineno} "
                f"message={_clip(repr(record.msg), 200)} args={_clip(repr(record.args), 200)}\n"
            )

    def flush(self) -> None:
        """Wait for the puts :meth:`emit` handed to its thread on an event loop (a spool with
        ``fsync="always"`` or a network backend); otherwise nothing to do: a record is in the
        spool once :meth:`emit` returns.

        Delivery is the spool's business: ``handler.spool.flush(timeout)`` waits for it.
        """
        loop_put = getattr(self, "_loop_put", None)
        if loop_put is not None:
            loop_put.drain()

    def close(self) -> None:
        """Stop the spool if this handler owns it (draining for ``close_timeout`` seconds).

        Records not delivered by then stay on disk for the next start. Safe to call twice.
        """
        self.acquire()
        try:
            closing, self._closed = not self._closed, True
        finally:
            self.release()
        loop_put = getattr(self, "_loop_put", None)  # None in a half-built handler
        if closing and loop_put is not None:
            loop_put.close()  # the puts handed off an event loop go in first
        if closing and self.owns_spool:
            g = guard
            g.active = True  # the spool's shutdown logs must not come back in here
            try:
                self.spool.stop(drain=True, timeout=self.close_timeout)
            except Exception:
                self.errors += 1
                logging.getLogger("spoolkit").exception("spool_handler_close_failed")
            finally:
                g.active = False
        super().close()

    def __repr__(self) -> str:
        return f"<SpoolHandler {logging.getLevelName(self.level)} spool={self.spool!r}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _open_spool(
    spool_or_path: Any, sink: Any, options: Mapping[str, Any] | None
) -> tuple[Any, bool]:
    """The spool to use and whether it was created here (from a path)."""
    if isinstance(spool_or_path, str) and is_reference(spool_or_path):
        spool_or_path = resolve_reference(spool_or_path)
        if callable(spool_or_path) and not hasattr(spool_or_path, "put"):
            spool_or_path = spool_or_path()
    if not isinstance(spool_or_path, (str, os.PathLike)):
        if sink is not None or options:
            raise ConfigError("sink= and spool_options= go with a path, not a ready spool")
        if not callable(getattr(spool_or_path, "put", None)):
            raise ConfigError(f"expected a spool or a path, got {spool_or_path!r}")
        return spool_or_path, False
    if sink is None:
        raise ConfigError(
            f"SpoolHandler({os.fspath(spool_or_path)!r}) needs sink=: an object, a URL "
            "or 'pkg.module:factory'"
        )
    from spoolkit.spool.facade import Spool  # noqa: PLC0415 - the Spool facade imports this module

    options = dict(options or {})
    if "serializer" not in options:  # JSON for logs; a spool written with another keeps it
        info = read_meta(os.path.abspath(os.fspath(spool_or_path)))
        options["serializer"] = (info or {}).get("serializer") or "json"
        if options["serializer"] not in ("json", "pickle", "raw"):
            options["serializer"] = "json"
    try:
        spool = Spool(spool_or_path, resolve_sink(sink), **options)
    except TypeError as exc:
        raise ConfigError(f"bad spool_options {options!r}: {exc}") from exc
    try:
        spool.start()
    except BaseException:
        spool.stop(drain=False)  # release the directory: nobody else can stop this spool
        raise
    return spool, True
