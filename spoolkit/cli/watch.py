"""``--watch``: show a view again every few seconds until Ctrl-C (``inspect --watch``).

On a terminal the screen is cleared before each view; elsewhere (a pipe, a log) the views
follow one another, each under a header line with the time. Ctrl-C ends the watch quietly
(exit 0): it is how a watch is meant to end.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import click

from spoolkit.cli.common import console

__all__ = ["DEFAULT_INTERVAL", "run"]

DEFAULT_INTERVAL = 2.0
"""Seconds between two views when ``--watch`` is given without a value."""


def run(
    show: Callable[[], None],
    interval: float,
    refreshes: int | None,
    what: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call ``show`` every ``interval`` seconds, ``refreshes`` times (None: until Ctrl-C).

    Args:
        show: prints one view.
        interval: seconds between two views.
        refreshes: how many views, for tests and scripts; None for no limit.
        what: named in the header (the spool path).
        sleep: waits between two views.
    """
    out = console()
    shown = 0
    try:
        while refreshes is None or shown < refreshes:
            if shown:
                sleep(interval)
            now = dt.datetime.now().astimezone().strftime("%H:%M:%S")
            header = f"{what} at {now}, every {interval:g}s; Ctrl-C to stop"
            if out.is_terminal:
                out.clear()
                out.print(header, style="dim")
            else:
                click.echo(f"-- {header}", err=True)
            show()
            shown += 1
    except KeyboardInterrupt:
        if out.is_terminal:
            click.echo("", err=True)  # end the ^C line
