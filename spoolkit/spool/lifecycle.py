"""A process's life around its spools: ``os.fork()``, a normal exit, SIGTERM.

- Fork: every :class:`~spoolkit.Spool` alive in the parent is rebuilt in the child (fresh
  locks, pool and counters; see ``Spool._after_fork_child``); the stores below it let go of the
  parent's files by themselves (:mod:`spoolkit.queue.opening`).
- Exit: at a normal interpreter exit, every running spool that no handler owns is stopped,
  delivering for up to its ``exit_timeout``. A spool a :class:`~spoolkit.SpoolHandler` owns is
  stopped by ``logging.shutdown`` closing the handler (it runs after this hook: ``logging``
  registers its own exit hook before spoolkit is imported). The lanes' queues do not close
  themselves at exit, so no finalizer closes a store under a spool still delivering.
- SIGTERM: Python's default is to die at once, no exit hook run. :func:`exit_on_sigterm`
  turns it into a normal exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import weakref
from typing import TYPE_CHECKING, Any

from spoolkit._internal.log import get_logger

if TYPE_CHECKING:
    from spoolkit.spool.facade import Spool

__all__ = ["after_fork_in_child_of", "exit_on_sigterm", "running", "watch_exit"]

_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()  # every spool: rebuilt in a forked child
_RUNNING: set[Spool] = set()  # held strongly: a running spool nobody references is still stopped
_exiting = False


def watch_exit(spool: Spool) -> None:
    """Rebuild ``spool`` in forked children."""
    _SPOOLS.add(spool)


def running(spool: Spool, now: bool) -> None:
    """Note that ``spool`` started (stop it at exit unless a handler owns it) or stopped.

    A running spool is held here: its workers keep delivering whether or not the application
    still references it, and the exit hook must find it to let them finish.
    """
    if now:
        _RUNNING.add(spool)
    else:
        _RUNNING.discard(spool)


def exiting() -> bool:
    """Whether the interpreter is past its normal end (the exit hook ran)."""
    return _exiting


def _at_exit() -> None:
    global _exiting
    _exiting = True
    for spool in list(_RUNNING):
        if spool.exit_owner is not None:
            continue
        try:
            spool.stop(drain=True, timeout=spool.exit_timeout)
        except Exception as exc:  # one spool's failure must not keep the others from stopping
            get_logger(spool=spool.path).warning("spool_exit_stop_failed", error=repr(exc))


def _after_fork_child() -> None:
    for spool in list(_SPOOLS):
        spool._after_fork_child()


def after_fork_in_child_of(sink: Any) -> None:
    """Tell ``sink`` (if it has ``after_fork()``) that it now lives in a forked child."""
    hook = getattr(sink, "after_fork", None)
    if callable(hook):
        hook()


def exit_on_sigterm() -> None:
    """Make SIGTERM a normal exit (``SystemExit(143)`` in the main thread).

    Python's default for SIGTERM (what systemd, Docker and Kubernetes send to stop a
    service) ends the process at once: records already accepted stay on disk and are
    delivered by the next opener, but nothing is delivered on the way out. After this call,
    SIGTERM raises ``SystemExit`` in the main thread instead, so ``finally`` blocks, ``atexit``
    hooks and ``logging.shutdown`` run, and every spool delivers for up to its
    ``exit_timeout`` (a handler's ``close_timeout``) before the process ends.

    Call it from the main thread. Servers that handle SIGTERM themselves (gunicorn, uvicorn,
    Celery) already end with a normal exit: there is no need for it.
    """
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_child)
