"""Ctrl-C in ``with Spool(...)``: say that a drain starts, and let a second Ctrl-C end it.

Leaving the block on ``KeyboardInterrupt`` stops the spool as any exit does: it delivers what
is waiting, for up to the stop timeout. Without a word that looks like a hang, and a second
Ctrl-C used to land in the middle of ``stop`` with a second traceback. So when records are
waiting, a warning says how long it may take and that a second Ctrl-C stops at once; while it
drains, SIGINT (in the main thread, when no handler of the application's own is installed) only
cuts the drain short: ``stop`` then hands back what is in flight and closes the spool cleanly,
everything undelivered stays on disk, and the first ``KeyboardInterrupt`` goes on alone.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from spoolkit.errors import ClosedError

if TYPE_CHECKING:
    from spoolkit.spool.facade import Spool

__all__ = ["interrupted_stop"]


def interrupted_stop(spool: Spool, timeout: float) -> None:
    """``spool.stop(timeout=timeout)`` after a Ctrl-C, saying so, a second Ctrl-C cutting it."""
    try:
        waiting = spool._backend.backlog() if spool._state == "running" else 0
    except ClosedError:
        waiting = 0
    if not waiting:
        spool.stop(timeout=timeout)
        return
    cut = spool._pool.cut
    previous = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):

        def second(signum: int, frame: FrameType | None) -> None:
            cut.set()

        previous = signal.signal(signal.SIGINT, second)
    again = "; Ctrl-C again to stop now, nothing is lost" if previous is not None else ""
    spool._log.warning(
        "spool_draining",
        message=f"draining up to {timeout:g} s{again}",
        backlog=waiting,
    )
    try:
        spool.stop(timeout=timeout)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if cut.is_set():
        spool._log.warning(
            "spool_stopped_now",
            message="stopped at once; what was not delivered stays on disk for the next start",
            backlog=_left(spool),
        )


def _left(spool: Spool) -> int:
    try:
        return spool.stats().backlog
    except ClosedError:
        return 0
