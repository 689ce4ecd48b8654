"""How redis-py's errors map to spoolkit's: shared by the Redis sink and the Redis backend, so
neither layer imports the other."""

from __future__ import annotations

from collections.abc import Sequence

from spoolkit._internal.redact import carry_secrets, redact_text
from spoolkit.errors import PermanentError, SinkError, TransientError

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("the Redis integrations need redis: pip install 'spoolkit[redis]'") from exc

__all__ = ["map_redis_error"]


def _newer(*names: str) -> tuple[type[Exception], ...]:
    """The error classes of these names that the installed redis-py has (newer releases add
    classes, and move some under another base class: they are named here for what they mean)."""
    found = (getattr(redis.exceptions, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type) and issubclass(cls, Exception))


# Redis answers that mean "not now" although they arrive as errors to a command: a replica
# that is loading or read-only after a failover, memory full until consumers trim, a cluster
# slot in migration or a cluster that is down, a server at its `maxclients` limit, session
# state the server dropped (the next call prepares it again).
_TRANSIENT_REPLIES: tuple[type[Exception], ...] = (
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    *_newer("MaxClientsReachedError", "NoSuchFieldsetError"),  # redis-py 8.1, 8.2
)
_TRANSIENT: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    *_TRANSIENT_REPLIES,
)


def map_redis_error(exc: redis.RedisError, sink: str, secrets: Sequence[str] = ()) -> SinkError:
    """Turn a redis-py error into a spoolkit error: the one place the Redis sink and
    the Redis backend decide.

    - ``ConnectionError`` (and its subclasses, authentication included) and ``TimeoutError``:
      :class:`TransientError`.
    - errors that mean "not now" (``LOADING``, ``READONLY``, ``OOM``, ``TRYAGAIN``,
      ``CLUSTERDOWN``, "max number of clients reached", a dropped fieldset):
      :class:`TransientError`, whatever base class the installed redis-py gives them.
    - any other ``ResponseError`` (``WRONGTYPE``, ``NOPERM``, a syntax error) and
      ``DataError`` (a value redis-py refuses to send): :class:`PermanentError`.
    - any other ``RedisError`` (a garbled reply, a ``WATCH`` conflict): :class:`TransientError`.

    Args:
        exc: the redis-py error.
        sink: the sink's redacted description.
        secrets: values to mask if the message echoes them.

    Returns:
        The spoolkit error to raise ``from exc``.
    """
    detail = " ".join(str(exc).split()) or "(no message)"
    message = redact_text(f"{type(exc).__name__}: {detail}", secrets)
    permanent = isinstance(exc, redis.ResponseError | redis.DataError) and not isinstance(
        exc, _TRANSIENT
    )
    kind = PermanentError if permanent else TransientError
    return carry_secrets(kind(message, sink=sink), secrets)
