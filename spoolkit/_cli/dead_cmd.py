"""``spoolkit dead``: list, requeue or purge a spool's dead letters."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from spoolkit import Spool
from spoolkit import _inspect as insp
from spoolkit._cli.common import (
    SPOOL_PATH,
    Failure,
    console,
    custom_serializer,
    emit_json,
    format_when,
    json_safe,
    serializer_option,
    spool_serializer,
)

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

    list is read-only and lock-free. requeue puts dead letters back into the spool under their
    record ids; purge deletes them for good. Both act on every dead letter unless --id is
    given, and need the spool not to be in use.
    """
    if action == "list":
        letters = insp.dead_letters(path, serializer=custom_serializer(serializer_spec))
        letters = [d for d in letters if not ids or d.id in ids]
        if as_json:
            emit_json([_dead_json(d) for d in letters])
        else:
            _print_dead(letters)
        return
    insp.spool_dir(path)
    serializer = spool_serializer(path, serializer_spec)
    if action == "purge" and not yes:
        what = f"{len(ids)} dead letter(s)" if ids else "every dead letter"
        click.confirm(f"delete {what} of {path} for good?", abort=True)
    spool = Spool(path, None, workers=1, serializer=serializer)
    try:
        store = spool.dead_letters
        chosen = list(ids) or None
        done = store.requeue(chosen) if action == "requeue" else store.purge(chosen)
        left = len(store)
    finally:
        spool.stop(drain=False)
    verb = "requeued" if action == "requeue" else "purged"
    click.echo(f"{verb} {done} dead letter(s); {left} left")
    if ids and done < len(set(ids)):
        raise Failure(f"{len(set(ids)) - done} of the given id(s) are not dead letters")


def _dead_json(d: insp.DeadLetterInfo) -> dict[str, Any]:
    return {
        "id": d.id,
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
    table = Table("id", "last attempt (UTC)", "attempts", "error", "item")
    for d in letters:
        item = repr(d.item) if d.decode_error is None else f"<{d.decode_error}>"
        error = f"{d.error_type.rpartition('.')[2]}: {d.error}"
        table.add_row(d.id, format_when(d.last_attempt_at), str(d.attempts), error, item)
    out.print(table)
