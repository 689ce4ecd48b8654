"""Helpers for testing code that uses spoolkit: sinks that remember, sinks that fail, a clock.

```python
from spoolkit import Spool
from spoolkit.testing import FakeClock, FlakySink, MemorySink

sink = MemorySink()
with Spool(tmp_path, sink, clock=FakeClock()) as spool:
    spool.put({"msg": "hi"})
    assert spool.flush(5)
assert sink.items == [{"msg": "hi"}]
```

:func:`check_sink_under_crash_loop` runs your own sink under the crash loop of
:mod:`spoolkit.torture` (kill -9 at chosen moments, restart, check nothing was lost).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spoolkit.errors import TransientError
from spoolkit.typing import Record

if TYPE_CHECKING:
    from spoolkit.torture import CrashLoopReport, check_sink_under_crash_loop

__all__ = [
    "CrashLoopReport",
    "FakeClock",
    "FlakySink",
    "MemorySink",
    "check_sink_under_crash_loop",
]


class MemorySink:
    """A thread-safe sink that keeps every batch it is given.

    Attributes:
        batches: the batches written, in the order ``write`` was called.
        opened: times ``open()`` was called.
        closed: times ``close()`` was called.
    """

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.opened = 0
        self.closed = 0
        self._cond = threading.Condition()

    def open(self) -> None:
        """Count the call."""
        self.opened += 1

    def close(self) -> None:
        """Count the call."""
        self.closed += 1

    def write(self, batch: Sequence[Record]) -> None:
        """Keep ``batch``."""
        with self._cond:
            self.batches.append(list(batch))
            self._cond.notify_all()

    @property
    def records(self) -> list[Record]:
        """Every record written, in order (redeliveries included)."""
        with self._cond:
            return [r for b in self.batches for r in b]

    @property
    def items(self) -> list[Any]:
        """The items of :attr:`records`."""
        return [r.item for r in self.records]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` records were written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(map(len, self.batches)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def clear(self) -> None:
        """Forget every batch."""
        with self._cond:
            self.batches.clear()


class FlakySink:
    """A sink that fails some ``write`` calls, deterministically, then passes the others on.

    Failures come from ``pattern`` when given (one entry per call: ``False``/``None`` to
    succeed, ``True`` to raise ``error``, or an exception instance to raise it; calls past its
    end succeed), otherwise from ``fail_rate`` with a seeded random generator.

    Args:
        fail_rate: the share of calls that fail, in ``[0, 1]``.
        pattern: an explicit sequence of outcomes, one per call.
        seed: seeds the generator behind ``fail_rate``.
        error: what a failing call raises (default :class:`~spoolkit.errors.TransientError`).
        inner: where successful batches go (default a new :class:`MemorySink`).

    Attributes:
        calls: ``write`` calls so far.
        failures: how many of them failed.
        inner: the sink successful batches went to.
    """

    def __init__(
        self,
        fail_rate: float = 0.0,
        *,
        pattern: Iterable[bool | BaseException | None] | None = None,
        seed: int = 0,
        error: BaseException | None = None,
        inner: Any = None,
    ) -> None:
        if not 0 <= fail_rate <= 1:
            raise ValueError(f"fail_rate must be in [0, 1], got {fail_rate!r}")
        self.fail_rate = fail_rate
        self.pattern = list(pattern) if pattern is not None else None
        self.error = error if error is not None else TransientError("injected failure")
        self.inner = inner if inner is not None else MemorySink()
        self.calls = 0
        self.failures = 0
        self._rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Record]) -> None:
        """Fail per the pattern or rate, else hand ``batch`` to :attr:`inner`."""
        with self._lock:
            n = self.calls
            self.calls += 1
            if self.pattern is not None:
                outcome = self.pattern[n] if n < len(self.pattern) else None
            else:
                outcome = self._rng.random() < self.fail_rate
            if outcome is True:
                outcome = self.error
            if isinstance(outcome, BaseException):
                self.failures += 1
        if isinstance(outcome, BaseException):
            # the same instance is raised again and again: drop the traceback it kept from
            # the last raise, or every failure would add frames to it (memory grows forever)
            raise outcome.with_traceback(None)
        self.inner.write(batch)

    @property
    def records(self) -> list[Record]:
        """Records the inner sink took (when it is a :class:`MemorySink`)."""
        return list(self.inner.records)


class FakeClock:
    """A clock whose ``sleep`` returns at once and moves time forward.

    Pass it as ``Spool(..., clock=FakeClock())``: backoffs take no real time, and
    :attr:`sleeps` tells how long they would have been.

    Args:
        start: the initial wall-clock time (seconds since the epoch).

    Attributes:
        sleeps: every ``sleep`` duration, in order.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def time(self) -> float:
        """Fake seconds since the epoch."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """Fake monotonic seconds."""
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        """Record ``seconds`` and move time forward by them, at once."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds
            self._mono += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait for ``event`` up to ``seconds``, at once: unless ``event`` is already set,
        record ``seconds`` as a sleep and move time forward by them. Whether ``event`` is set."""
        if not event.is_set():
            self.sleep(seconds)
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without recording a sleep."""
        with self._lock:
            self._now += seconds
            self._mono += seconds


def __getattr__(name: str) -> Any:
    """The crash-loop names, loaded on first use: ``import spoolkit.testing`` stays light (no
    torture harness, no inspector)."""
    if name in ("CrashLoopReport", "check_sink_under_crash_loop"):
        from spoolkit import torture  # noqa: PLC0415 - heavy, and only for crash-loop tests

        return getattr(torture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
