"""The ``spoolkit`` command group: its error handling, its commands, :func:`main`.

Imported by :mod:`spoolkit.cli`, which says how to install the ``cli`` extra when click or
rich is missing instead of failing here with a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import click

from spoolkit import __version__
from spoolkit.cli.common import (
    EXIT_BUSY,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    BadInput,
    Busy,
    Failure,
    json_safe,
)
from spoolkit.cli.dead_cmd import dead
from spoolkit.cli.demo_cmd import demo
from spoolkit.cli.drain_cmd import drain
from spoolkit.cli.fsck_cmd import fsck
from spoolkit.cli.inspect_cmd import inspect_cmd, peek
from spoolkit.cli.ship_cmd import ship
from spoolkit.errors import ConfigError, FormatError, LockedError, SpoolError

__all__ = ["EXIT_BUSY", "EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "cli", "json_safe", "main"]


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


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  spoolkit inspect /var/spool/app
  spoolkit dead list /var/spool/app --since 1h
  spoolkit drain /var/spool/app --to https://logs.example.com/ingest

Each command's --help shows its own examples.""",
)
@click.version_option(__version__, prog_name="spoolkit")
def cli() -> None:
    """Inspect, check, repair, drain and ship spoolkit spools; run the crash demo.

    Exit codes: 0 ok, 1 problems found, 2 usage or bad path, 3 spool in use.
    """


FSCK_EXAMPLE = """\b
Examples:
  spoolkit fsck /var/spool/app
  spoolkit fsck /var/spool/app --repair"""
if not fsck.epilog:  # fsck's module is another's: give it an example here unless it has one
    fsck.epilog = FSCK_EXAMPLE

for _command in (inspect_cmd, peek, fsck, dead, drain, ship, demo):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line (the ``spoolkit`` console script)."""
    run: Callable[..., Any] = cli.main
    run(args=argv, prog_name="spoolkit")
    raise SystemExit(EXIT_OK)  # pragma: no cover - cli.main exits itself
