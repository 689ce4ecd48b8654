"""``spoolkit inspect`` and ``spoolkit peek``: read-only looks inside a spool."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from spoolkit import _inspect as insp
from spoolkit._cli.common import (
    SPOOL_PATH,
    console,
    custom_serializer,
    emit_json,
    format_age,
    format_size,
    format_when,
    json_safe,
    serializer_option,
)

__all__ = ["inspect_cmd", "peek"]


@click.command("inspect")
@click.argument("path", type=SPOOL_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(path: str, as_json: bool) -> None:
    """Summarise the spool at PATH: backlog, disk use, oldest record, dead letters.

    Read-only and lock-free: safe on a spool another process is writing to.
    """
    info = insp.inspect_spool(path)
    age = info.oldest_age()
    if as_json:
        emit_json(
            {
                "path": info.path,
                "format": info.format,
                "serializer": info.serializer,
                "uid": info.uid,
                "backlog": info.backlog,
                "record_bytes": info.record_bytes,
                "bytes_on_disk": info.bytes_on_disk,
                "chunk_files": len(info.chunks),
                "oldest_enqueued_at": info.oldest_enqueued_at,
                "oldest_age_seconds": age,
                "dead_letters": info.dead_letters,
                "last_error": info.last_error,
                "locked": info.locked,
                "holder_pid": info.holder_pid,
                "damaged_regions": info.damaged_regions,
            }
        )
        return
    table = Table(title=f"spool {info.path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    owner = f"in use by pid {info.holder_pid or '?'}" if info.locked else "not in use"
    table.add_row("state", owner)
    table.add_row("backlog", f"{info.backlog:,} record(s), {format_size(info.record_bytes)}")
    table.add_row("oldest record", format_age(age) + (" old" if age is not None else ""))
    table.add_row("chunk files", f"{len(info.chunks)}")
    table.add_row("bytes on disk", format_size(info.bytes_on_disk))
    table.add_row("dead letters", f"{info.dead_letters:,}")
    table.add_row("last error", info.last_error or "-")
    table.add_row("serializer", info.serializer or "?")
    if info.damaged_regions:
        table.add_row("damage", f"{info.damaged_regions} region(s): run `spoolkit fsck`")
    console().print(table)


@click.command("peek")
@click.argument("path", type=SPOOL_PATH)
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@serializer_option
def peek(path: str, count: int, as_json: bool, serializer_spec: str | None) -> None:
    """Show the next records of the spool at PATH without consuming them."""
    records = insp.peek(path, count, serializer=custom_serializer(serializer_spec))
    if as_json:
        emit_json([_record_json(r) for r in records])
        return
    _print_records(records, "no records waiting")


def _record_json(r: insp.PeekedRecord) -> dict[str, Any]:
    item = json_safe(r.item) if r.decode_error is None else None
    return {
        "id": r.id,
        "enqueued_at": r.enqueued_at,
        "chunk": r.chunk,
        "offset": r.offset,
        "size": len(r.payload),
        "item": item,
        "decode_error": r.decode_error,
        "deliveries": r.deliveries,
    }


def _print_records(records: list[insp.PeekedRecord], empty: str) -> None:
    out = console()
    if not records:
        out.print(empty)
        return
    table = Table("id", "enqueued (UTC)", "deliveries", "item")
    for r in records:
        shown = repr(r.item) if r.decode_error is None else f"<{r.decode_error}> {r.payload!r}"
        table.add_row(str(r.id), format_when(r.enqueued_at), str(r.deliveries), shown)
    out.print(table)
