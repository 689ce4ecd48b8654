"""Child processes that do not outlive the test run that started them."""

from __future__ import annotations

import sys

_EXEC_WITH_DEATHSIG = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL); "  # PR_SET_PDEATHSIG: kept across execv
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def dying_with_this_process(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGKILL when the test process dies: a test run
    killed half-way (a timeout, Ctrl-C) leaves no server behind. ``argv[0]`` is a path."""
    return [sys.executable, "-c", _EXEC_WITH_DEATHSIG, *argv]
