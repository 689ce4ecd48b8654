"""Retry policies for sinks and deferred calls, built on tenacity, and the clock they wait on.

A :class:`RetryPolicy` is a small frozen description (attempts, exponential backoff, jitter,
which errors to retry) that :meth:`RetryPolicy.build` turns into a ``tenacity.Retrying``. A
ready-made ``tenacity.Retrying`` is accepted wherever a policy is; spoolkit copies it with its
own interruptible ``sleep`` so that stopping a spool never waits out a backoff.

Time goes through a :class:`Clock` (``time``, ``monotonic``, ``sleep``): the real one by
default, :class:`spoolkit.testing.FakeClock` in tests.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import tenacity

from spoolkit._internal.redact import error_repr
from spoolkit.errors import ConfigError, PermanentError, TransientError

__all__ = [
    "UNKNOWN_ATTEMPTS",
    "Clock",
    "RetryPolicy",
    "SystemClock",
    "id_range",
    "log_retry",
    "older_than",
    "to_retrying",
]


@runtime_checkable
class Clock(Protocol):
    """Where a spool reads the time and waits.

    ``time`` is wall-clock seconds since the epoch (record timestamps), ``monotonic`` measures
    durations (stuck sinks), ``sleep`` waits (backoff, restarts).
    """

    def time(self) -> float:
        """Seconds since the epoch."""

    def monotonic(self) -> float:
        """A clock that never goes back, for durations."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock: :func:`time.time`, :func:`time.monotonic`, :func:`time.sleep`."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)``."""
        time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event`` (a stop cuts a backoff short); whether it is
        set."""
        return event.wait(seconds)


def _retry_after(state: tenacity.RetryCallState) -> float:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return 0.0
    exc = outcome.exception()
    after = getattr(exc, "retry_after", None)
    return float(after) if isinstance(exc, TransientError) and after else 0.0


UNKNOWN_ATTEMPTS = 5
"""Attempts for an error that is neither a TransientError nor a PermanentError, by default."""


def older_than(
    enqueued_at: float, max_age: float, now: Callable[[], float]
) -> Callable[[tenacity.RetryCallState], bool]:
    """A tenacity stop: true once a record put at ``enqueued_at`` is over ``max_age`` s old."""

    def stop(_state: tenacity.RetryCallState) -> bool:
        return now() - enqueued_at >= max_age

    return stop


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed batch is tried again.

    The wait before attempt ``n + 1`` is ``min(max_wait, initial_wait * multiplier ** (n - 1))``
    plus a random jitter in ``[0, jitter]`` seconds, and at least the ``retry_after`` a
    :class:`~spoolkit.errors.TransientError` asked for.

    By default nothing that may pass is ever given up: a
    :class:`~spoolkit.errors.TransientError` (a network error, a timeout, a 5xx or 429, every
    error a spoolkit sink maps as passing) is retried without limit, with the wait capped at
    ``max_wait``, so an outage of any length dead-letters nothing (Vector's sinks do the same).
    Any other exception (a bug in a sink of your own, say) is tried :data:`UNKNOWN_ATTEMPTS`
    times, and a :class:`~spoolkit.errors.PermanentError` once. Set ``max_attempts`` or
    ``max_age`` to give up on passing errors too; then the batch is dead-lettered.

    Args:
        max_attempts: attempts in all, the first included (``>= 1``), for every error; None
            (the default): a TransientError without limit, any other error
            :data:`UNKNOWN_ATTEMPTS` times.
        max_age: give up on a batch whose oldest record was put this many seconds ago, once
            an attempt fails; None for no limit. The age is the spool clock's ``time()`` less
            the record's ``enqueued_at`` (the wall clock when it was put): a
            :class:`spoolkit.testing.FakeClock` for it starts at ``time.time()``.
        initial_wait: seconds before the second attempt.
        max_wait: the longest wait between two attempts, in seconds.
        multiplier: growth of the wait from one attempt to the next.
        jitter: the most random seconds added to each wait.
        retry_on: exception types worth another attempt.
        give_up_on: exception types that dead-letter at once, even if listed in ``retry_on``.
        seed: seeds the jitter, for reproducible tests; ``None`` for a random one.
    """

    max_attempts: int | None = None
    max_age: float | None = None
    initial_wait: float = 0.5
    max_wait: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = (PermanentError,)
    seed: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")
        if self.max_age is not None and self.max_age <= 0:
            raise ConfigError(f"max_age must be > 0 seconds or None, got {self.max_age!r}")
        for name in ("initial_wait", "max_wait", "jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if self.multiplier < 1:
            raise ConfigError(f"multiplier must be >= 1, got {self.multiplier!r}")

    def wait_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), jitter included."""
        try:
            base = min(self.max_wait, self.initial_wait * self.multiplier ** (attempt - 1))
        except OverflowError:  # attempt 1025 and later of a long outage: long past max_wait
            base = self.max_wait
        extra = (rng or random).uniform(0, self.jitter) if self.jitter else 0.0
        return base + extra

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        n = state.attempt_number
        if self.max_attempts is not None:
            return n >= self.max_attempts
        outcome = state.outcome
        if outcome is not None and isinstance(outcome.exception(), TransientError):
            return False
        return n >= UNKNOWN_ATTEMPTS

    def build(self, sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
        """Return the ``tenacity.Retrying`` this policy describes, waiting with ``sleep``."""
        rng = random.Random(self.seed)  # noqa: S311 - jitter, not cryptography

        def wait(state: tenacity.RetryCallState) -> float:
            return max(self.wait_for(state.attempt_number, rng), _retry_after(state))

        retry = tenacity.retry_if_exception_type(self.retry_on)
        if self.give_up_on:
            retry = retry & tenacity.retry_if_not_exception_type(self.give_up_on)  # type: ignore[assignment]
        return tenacity.Retrying(
            sleep=sleep,
            stop=self._stop,
            wait=wait,
            retry=retry,
            reraise=False,
        )


def to_retrying(
    retry: RetryPolicy | tenacity.Retrying, sleep: Callable[[float], None]
) -> tenacity.Retrying:
    """A fresh ``tenacity.Retrying`` for ``retry`` that waits with ``sleep``.

    A user-supplied ``Retrying`` is copied with spoolkit's ``sleep``; its ``reraise`` and
    ``retry_error_callback`` are reset so that exhaustion always reaches the dead letters.

    Raises:
        ConfigError: ``retry`` is neither a :class:`RetryPolicy` nor a ``tenacity.Retrying``.
    """
    if isinstance(retry, RetryPolicy):
        return retry.build(sleep)
    if isinstance(retry, tenacity.Retrying):
        return retry.copy(sleep=sleep, reraise=False, retry_error_callback=None)
    raise ConfigError(f"retry must be a spoolkit.RetryPolicy or a tenacity.Retrying, got {retry!r}")


def id_range(ids: Sequence[str]) -> str:
    """``"first..last"`` of a batch's record ids, for logs."""
    if not ids:
        return ""
    return ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"


def log_retry(log: Any, ids: Sequence[str]) -> Callable[[tenacity.RetryCallState], None]:
    """A tenacity ``before_sleep`` hook logging each retry of the batch ``ids``."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "batch_retry",
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
            batch_size=len(ids),
            record_ids=id_range(ids),
            error=error_repr(exc) if exc is not None else "None",
        )

    return before_sleep
