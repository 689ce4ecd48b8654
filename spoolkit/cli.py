"""The ``spoolkit`` command line: look inside spools, repair them, drain or ship them, run the
demo.

Needs the ``cli`` extra (``pip install 'spoolkit[cli]'``: click and rich). The work is done by
library modules (:mod:`spoolkit._inspect`, :mod:`spoolkit._demo`); the commands, one module
per family under :mod:`spoolkit._cli`, parse options and format results. This module holds the
command group, its error handling and :func:`main`.

Exit codes: 0 all is well; 1 a problem was found (damage, lost demo records, a failed
delivery); 2 a usage error or a bad path; 3 what is left to do is in lanes other (live)
processes hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

try:
    import click
    import rich  # noqa: F401 - the commands need it: fail here, naming the extra
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the spoolkit command line needs click and rich: pip install 'spoolkit[cli]'"
    ) from exc

from spoolkit import __version__
from spoolkit._cli.common import (
    EXIT_BUSY,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    BadInput,
    Busy,
    Failure,
    json_safe,  # noqa: F401 - importable from here, as before the commands moved out
)
from spoolkit._cli.dead_cmd import dead
from spoolkit._cli.demo_cmd import demo
from spoolkit._cli.drain_cmd import drain
from spoolkit._cli.fsck_cmd import fsck
from spoolkit._cli.inspect_cmd import inspect_cmd, peek
from spoolkit._cli.ship_cmd import ship
from spoolkit.errors import ConfigError, FormatError, LockedError, SpoolError

__all__ = ["EXIT_BUSY", "EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "cli", "main"]


class _Group(click.Group):
    """Turns spoolkit's errors into one-line messages and documented exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LockedError as exc:
            raise Busy(str(exc)) from None
        except (ConfigError, FormatError) as exc:  # PathError is a ConfigError
            raise BadInput(str(exc)) from None
        except (SpoolError, OSError) as exc:
            raise Failure(str(exc) or type(exc).__name__) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spoolkit")
def cli() -> None:
    """Inspect, check, repair, drain and ship spoolkit spools; run the crash demo.

    Exit codes: 0 ok, 1 problems found, 2 usage or bad path, 3 spool in use.
    """


for _command in (inspect_cmd, peek, fsck, dead, drain, ship, demo):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line (the ``spoolkit`` console script)."""
    run: Callable[..., Any] = cli.main
    run(args=argv, prog_name="spoolkit")
    raise SystemExit(EXIT_OK)  # pragma: no cover - cli.main exits itself
