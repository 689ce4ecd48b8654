"""``spoolkit dead``: list, requeue or purge a spool's dead letters (every lane's: they share
``<spool>/dead``)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from spoolkit import _inspect as insp
from spoolkit._cli.common import (
    SPOOL_PATH,
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
from spoolkit._cli.lanes import holders
from spoolkit._cli.requeue import Requeue

__all__ = ["dead"]


@click.command("dead")
@click.argument("path", type=SPOOL_PATH)
@click.argument("action", type=click.Choice(["list", "requeue", "purge"]))
@click.option("--id", "ids", multiple=True, help="Only this record id (repeatable).")
@click.option("--yes", is_flag=True, help="Purge without asking.")
@click.option("--json", "as_json", is_flag=True, help="list: print the dead letters as JSON.")
@serializer_option
def dead(
    path: str,
    action: str,
    *,
    ids: tuple[str, ...],
    yes: bool,
    as_json: bool,
    serializer_spec: str | None,
) -> None:
    """List, requeue or purge the dead letters of the spool at PATH.

    The lanes of a spool share one dead-letter store; running processes may use it meanwhile.
    list is read-only and lock-free. requeue puts dead letters back into the lane that issued
    them, under their record ids; a letter whose lane a live process holds is left (exit 3,
    naming the pid). purge deletes them for good. Both act on every dead letter unless --id is
    given.
    """
    if action == "list":
        letters = insp.dead_letters(path, serializer=custom_serializer(serializer_spec))
        letters = [d for d in letters if not ids or d.id in ids]
        if as_json:
            emit_json([_dead_json(d) for d in letters])
        else:
            _print_dead(letters)
        return
    root = insp.spool_dir(path)
    if action == "purge":
        if not yes:
            what = f"{len(ids)} dead letter(s)" if ids else "every dead letter"
            click.confirm(f"delete {what} of {path} for good?", abort=True)
        done, left = Requeue(root, None).purge(list(ids) or None)
        click.echo(f"purged {done} dead letter(s); {left} left")
    else:
        with Requeue(root, spool_serializer(root, serializer_spec)) as job:
            done, left = job.requeue(list(ids) or None)
        click.echo(f"requeued {done} dead letter(s); {left} left")
        if job.held:
            held = [(n, pid) for n, (pid, _count) in sorted(job.held.items())]
            kept = sum(count for _pid, count in job.held.values())
            raise Busy(f"{kept} dead letter(s) left: their lanes are in use: {holders(held)}")
        if job.foreign:
            raise Failure(f"{job.foreign} dead letter(s) left: no lane of {root} issued their ids")
    if ids and done < len(set(ids)):
        raise Failure(f"{len(set(ids)) - done} of the given id(s) are not dead letters")


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


def _print_dead(letters: list[insp.DeadLetterInfo]) -> None:
    out = console()
    if not letters:
        out.print("no dead letters")
        return
    table = Table("id", "lane", "last attempt (UTC)", "attempts", "error", "item")
    for d in letters:
        item = repr(d.item) if d.decode_error is None else f"<{d.decode_error}>"
        error = f"{d.error_type.rpartition('.')[2]}: {d.error}"
        lane = "-" if d.lane is None else str(d.lane)
        when = format_when(d.last_attempt_at)
        table.add_row(d.id, lane, when, str(d.attempts), error, item)
    out.print(table)
