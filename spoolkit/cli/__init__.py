"""The ``spoolkit`` command line: look inside spools, repair them, drain or ship them, run the
demo.

Needs the ``cli`` extra (``pip install 'spoolkit[cli]'``: click and rich). Without it,
``spoolkit`` prints the command that installs it and exits 1, never a traceback. The work is
done by library modules (:mod:`spoolkit.tools.inspect`, :mod:`spoolkit.tools.demo`); the
commands, one module per family under :mod:`spoolkit.cli`, parse options and format results, and
:mod:`spoolkit.cli.group` holds the command group, its error handling and ``main``.

Exit codes: 0 all is well; 1 a problem was found (damage, lost demo records, a failed
delivery, the ``cli`` extra missing); 2 a usage error or a bad path; 3 what is left to do is in
lanes other (live) processes hold.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

INSTALL = (
    "the spoolkit command line needs the cli extra (click and rich), which is not installed. "
    "Install it with:\n"
    "  pip install 'spoolkit[cli]'\n"
    "or, from a clone of the repository:\n"
    "  pip install -e '.[cli]'"
)
"""What ``spoolkit`` prints when click or rich is missing."""

_MISSING: ImportError | None = None
try:
    from spoolkit.cli.group import (
        EXIT_BUSY,
        EXIT_OK,
        EXIT_PROBLEM,
        EXIT_USAGE,
        cli,
        json_safe,
    )
    from spoolkit.cli.group import main as _main
except ImportError as exc:
    if (exc.name or "").partition(".")[0] not in {"click", "rich"}:
        raise  # a bug, not a missing extra
    _MISSING = exc

__all__ = ["EXIT_BUSY", "EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "cli", "json_safe", "main"]


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line (the ``spoolkit`` console script).

    Without the ``cli`` extra: print how to install it on stderr and exit 1.
    """
    if _MISSING is not None:
        print(f"spoolkit: {INSTALL}\n(missing: {_MISSING.name})", file=sys.stderr)
        raise SystemExit(1)
    _main(argv)


def __getattr__(name: str) -> Any:
    """Only reached without the ``cli`` extra: the command line's names need it."""
    if _MISSING is not None and name in __all__:
        raise ImportError(INSTALL) from _MISSING
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
