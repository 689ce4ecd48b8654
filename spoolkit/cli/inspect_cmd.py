"""``spoolkit inspect`` and ``spoolkit peek``: read-only looks inside a spool."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from spoolkit.cli import watch
from spoolkit.cli.common import (
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
from spoolkit.cli.lanes import lane_json
from spoolkit.tools import inspect as insp

__all__ = ["inspect_cmd", "peek"]


@click.command(
    "inspect",
    epilog="""\b
Examples:
  spoolkit inspect /var/spool/app
  spoolkit inspect /var/spool/app --watch        # refresh every 2 s until Ctrl-C
  spoolkit inspect /var/spool/app --json | jq .backlog""",
)
@click.argument("path", type=SPOOL_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--watch",
    "watch_every",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=watch.DEFAULT_INTERVAL,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS ({watch.DEFAULT_INTERVAL:g} if not given) until Ctrl-C; "
    "with --json, one JSON line per refresh.",
)
@click.option("--refreshes", type=click.IntRange(min=1), hidden=True, help="Stop after N views.")
def inspect_cmd(path: str, as_json: bool, watch_every: float | None, refreshes: int | None) -> None:
    """Summarise the spool at PATH, every lane added up: backlog, disk use, oldest record,
    dead letters, and which live processes hold which lanes.

    Read-only and lock-free: safe on a spool other processes are writing to. --watch keeps
    the view up to date (a live view of a backlog draining or a sink stuck); Ctrl-C ends it.
    """
    if watch_every is None:
        _show(path, as_json, pretty=True)
        return
    watch.run(lambda: _show(path, as_json, pretty=False), watch_every, refreshes, path)


def _show(path: str, as_json: bool, *, pretty: bool) -> None:
    """Print the summary once: a table, or JSON (indented when ``pretty``, else one line)."""
    info = insp.inspect_spool(path)
    if as_json:
        data = _summary_json(info)
        if pretty:
            emit_json(data)
        else:
            click.echo(json.dumps(data, sort_keys=True))
        return
    out = console()
    out.print(_summary_table(info))
    if len(info.lanes) > 1:
        out.print(_lanes_table(info.lanes))


def _summary_json(info: insp.SpoolInfo) -> dict[str, Any]:
    return {
        "path": info.path,
        "format": info.format,
        "serializer": info.serializer,
        "uid": info.uid,
        "backlog": info.backlog,
        "record_bytes": info.record_bytes,
        "bytes_on_disk": info.bytes_on_disk,
        "chunk_files": len(info.chunks),
        "oldest_enqueued_at": info.oldest_enqueued_at,
        "oldest_age_seconds": info.oldest_age(),
        "dead_letters": info.dead_letters,
        "last_error": info.last_error,
        "locked": info.locked,
        "holder_pid": info.holder_pid,
        "damaged_regions": info.damaged_regions,
        "lost_records": info.lost_records,
        "lanes": [lane_json(lane) for lane in info.lanes],
    }


def _summary_table(info: insp.SpoolInfo) -> Table:
    age = info.oldest_age()
    table = Table(title=f"spool {info.path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", _state(info))
    table.add_row("backlog", f"{info.backlog:,} record(s), {format_size(info.record_bytes)}")
    table.add_row("oldest record", format_age(age) + (" old" if age is not None else ""))
    table.add_row("chunk files", f"{len(info.chunks)}")
    table.add_row("bytes on disk", format_size(info.bytes_on_disk))
    table.add_row("dead letters", f"{info.dead_letters:,}")
    table.add_row("last error", info.last_error or "-")
    table.add_row("serializer", info.serializer or "?")
    if info.damaged_regions:
        table.add_row("damage", f"{info.damaged_regions} region(s): run `spoolkit fsck`")
    if info.lost:
        table.add_row("lost", f"{info.lost_records:,} record(s) lost: run `spoolkit fsck`")
    return table


def _state(info: insp.SpoolInfo) -> str:
    held = [lane for lane in info.lanes if lane.locked]
    pids = ", ".join(dict.fromkeys(str(lane.holder_pid or "?") for lane in held))
    if len(info.lanes) <= 1:
        return f"in use by pid {pids}" if held else "not in use"
    return f"{len(info.lanes)} lanes, " + (
        f"{len(held)} in use by pid {pids}" if held else "none in use"
    )


def _lanes_table(lanes: tuple[insp.LaneInfo, ...]) -> Table:
    table = Table("lane", "backlog", "oldest", "chunk files", "held by", title="lanes")
    table.title_justify = "left"
    for lane in lanes:
        age = lane.oldest_age()
        table.add_row(
            str(lane.number),
            f"{lane.backlog:,}",
            format_age(age),
            str(len(lane.chunks)),
            f"pid {lane.holder_pid or '?'}" if lane.locked else "-",
        )
    return table


@click.command(
    "peek",
    epilog="""\b
Examples:
  spoolkit peek /var/spool/app -n 5
  spoolkit peek /var/spool/app --json | jq -r '.[].id'""",
)
@click.argument("path", type=SPOOL_PATH)
@click.option(
    "-n",
    "count",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many records to show (at least 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@serializer_option
def peek(path: str, count: int, as_json: bool, serializer_spec: str | None) -> None:
    """Show the next records of the spool at PATH without consuming them.

    Every lane's records, oldest first. Read-only and lock-free.
    """
    records = insp.peek(path, count, serializer=custom_serializer(serializer_spec))
    if as_json:
        emit_json([_record_json(r) for r in records])
        return
    _print_records(records, "no records waiting")


def _record_json(r: insp.PeekedRecord) -> dict[str, Any]:
    item = json_safe(r.item) if r.decode_error is None else None
    return {
        "id": r.record_id,  # the form dead letters, Record.id and `dead requeue --id` use
        "record_id": r.record_id,
        "seq": r.id,
        "lane": r.lane,
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
    table = Table("lane")
    table.add_column("id", no_wrap=True, min_width=max(len(r.record_id) for r in records))
    table.add_column("enqueued (UTC)", no_wrap=True)
    table.add_column("deliveries")
    table.add_column("item", overflow="fold")
    for r in records:
        shown = repr(r.item) if r.decode_error is None else f"<{r.decode_error}> {r.payload!r}"
        when = format_when(r.enqueued_at)
        table.add_row(str(r.lane), r.record_id, when, str(r.deliveries), shown)
    out.print(table)
