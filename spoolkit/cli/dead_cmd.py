"""``spoolkit dead``: list, requeue or purge a spool's dead letters (every lane's: they share
``<spool>/dead``).

Both ``spoolkit dead list PATH`` and ``spoolkit dead PATH list`` work. Record ids are printed
whole at any terminal width, in the form ``requeue --id`` and ``purge --id`` take.
"""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from spoolkit.cli.common import (
    SPOOL_PATH,
    BadInput,
    Busy,
    Failure,
    console,
    custom_serializer,
    emit_json,
    format_when,
    json_safe,
    serializer_option,
    spool_serializer,
)
from spoolkit.cli.dead_filters import Selection, parse_since
from spoolkit.cli.lanes import holders
from spoolkit.cli.requeue import Requeue
from spoolkit.tools import inspect as insp

__all__ = ["dead"]

ACTIONS = ("list", "requeue", "purge")
FORMS = "spoolkit dead list|requeue|purge PATH (or spoolkit dead PATH list|requeue|purge)"
WIDE = 120
"""Terminals at least this wide get a table; narrower ones one block per letter."""


def _action_and_path(first: str, second: str | None) -> tuple[str, str]:
    """(action, path) from the two arguments, in either order.

    Raises:
        BadInput: neither argument is an action, or one is missing.
    """
    if first in ACTIONS and second is not None:
        return first, second
    if second in ACTIONS:
        return second, first
    got = " ".join(a for a in (first, second) if a is not None)
    raise BadInput(f"`spoolkit dead {got}`: want an action and a spool path: {FORMS}")


@click.command(
    "dead",
    epilog="""\b
Examples:
  spoolkit dead list /var/spool/app --since 1h --error-contains timeout
  spoolkit dead requeue /var/spool/app --id 9f1c2b7e4d3a4c1b8e6f0a2d5c7b9e13-42
  spoolkit dead purge /var/spool/app --since 7d --yes""",
)
@click.argument("first", metavar="ACTION", type=SPOOL_PATH)
@click.argument("second", metavar="PATH", type=SPOOL_PATH, required=False)
@click.option("--id", "ids", multiple=True, help="Only this record id (repeatable).")
@click.option(
    "--since",
    metavar="DURATION|TIME",
    help="Only letters whose last attempt failed since then: 10m, 2h, 1d, or an ISO time "
    "(UTC unless it has an offset).",
)
@click.option(
    "--error-contains",
    metavar="TEXT",
    help="Only letters whose error (type and message) contains TEXT, ignoring case.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="At most this many letters, the most recent."
)
@click.option("--yes", is_flag=True, help="Purge without asking.")
@click.option("--json", "as_json", is_flag=True, help="list: print the dead letters as JSON.")
@serializer_option
def dead(
    first: str,
    second: str | None,
    *,
    ids: tuple[str, ...],
    since: str | None,
    error_contains: str | None,
    limit: int | None,
    yes: bool,
    as_json: bool,
    serializer_spec: str | None,
) -> None:
    """List, requeue or purge the dead letters of the spool at PATH.

    ACTION is list, requeue or purge, before or after PATH. The lanes of a spool share one
    dead-letter store; running processes may use it meanwhile. list is read-only and
    lock-free. requeue puts dead letters back into the lane that issued them, under their
    record ids; a letter whose lane a live process holds is left (exit 3, naming the pid).
    purge deletes them for good. Each acts on every dead letter unless --id, --since,
    --error-contains or --limit narrow the choice.
    """
    action, path = _action_and_path(first, second)
    choice = Selection(
        ids=ids,
        since=None if since is None else parse_since(since, time.time()),
        error_contains=error_contains,
        limit=limit,
    )
    if action == "list":
        letters = insp.dead_letters(path, serializer=custom_serializer(serializer_spec))
        chosen = choice.apply(letters)
        if as_json:
            emit_json([_dead_json(d) for d in chosen])
        else:
            _print_dead(chosen, len(letters))
        return
    root = insp.spool_dir(path)
    wanted: list[str] | None = None
    if choice.filtered:
        wanted = [d.id for d in choice.apply(insp.dead_letters(root, decode=False))]
    if action == "purge":
        if not yes:
            what = f"{len(wanted)} dead letter(s)" if wanted is not None else "every dead letter"
            click.confirm(f"delete {what} of {path} for good?", abort=True)
        done, left = Requeue(root, None).purge(wanted) if wanted != [] else (0, _count(root))
        click.echo(f"purged {done} dead letter(s); {left} left")
    else:
        with Requeue(root, spool_serializer(root, serializer_spec)) as job:
            done, left = job.requeue(wanted) if wanted != [] else (0, _count(root))
        click.echo(f"requeued {done} dead letter(s); {left} left")
        if job.held:
            held = [(n, pid) for n, (pid, _count) in sorted(job.held.items())]
            kept = sum(count for _pid, count in job.held.values())
            raise Busy(f"{kept} dead letter(s) left: their lanes are in use: {holders(held)}")
        if job.foreign:
            raise Failure(f"{job.foreign} dead letter(s) left: no lane of {root} issued their ids")
    if ids and done < len(set(ids)):
        raise Failure(
            f"{len(set(ids)) - done} of the given id(s) are not dead letters: "
            f"`spoolkit dead list {path}` prints the ids"
        )


def _count(root: str) -> int:
    return len(insp.dead_letters(root, decode=False))


def _dead_json(d: insp.DeadLetterInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "lane": d.lane,
        "item": json_safe(d.item) if d.decode_error is None else None,
        "enqueued_at": d.enqueued_at,
        "error_type": d.error_type,
        "error": d.error,
        "attempts": d.attempts,
        "last_attempt_at": d.last_attempt_at,
        "decode_error": d.decode_error,
    }


def _print_dead(letters: list[insp.DeadLetterInfo], total: int) -> None:
    """The letters as a table on a wide terminal, as blocks on a narrow one; ids whole."""
    out = console()
    if not letters:
        out.print("no dead letters" + (f" match ({total:,} in all)" if total else ""))
        return
    rows = []
    for d in letters:
        item = repr(d.item) if d.decode_error is None else f"<{d.decode_error}>"
        error = f"{d.error_type.rpartition('.')[2]}: {d.error}"
        lane = "-" if d.lane is None else str(d.lane)
        rows.append((d.id, lane, format_when(d.last_attempt_at), str(d.attempts), error, item))
    if out.width >= WIDE:
        table = Table(expand=False)
        table.add_column("id", no_wrap=True, min_width=max(len(r[0]) for r in rows))
        table.add_column("lane", no_wrap=True)
        table.add_column("last attempt (UTC)", no_wrap=True)
        table.add_column("attempts", no_wrap=True)
        table.add_column("error", overflow="fold")
        table.add_column("item", overflow="fold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    else:
        for rid, lane, when, attempts, error, item in rows:
            # plain lines: an id longer than the terminal wraps on screen but copies whole
            click.echo(f"{rid}  lane {lane}  {when}  {attempts} attempt(s)")
            click.echo(f"  error: {error}")
            click.echo(f"  item:  {item}")
    if len(letters) < total:
        out.print(f"{len(letters):,} of {total:,} dead letter(s) shown")
