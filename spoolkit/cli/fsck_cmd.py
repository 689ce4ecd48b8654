"""``spoolkit fsck``: verify every checksum of a spool's lanes, and repair them on request."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from spoolkit.cli.common import EXIT_PROBLEM, SPOOL_PATH, Busy, console, emit_json
from spoolkit.cli.lanes import holders, lane_json
from spoolkit.tools import inspect as insp
from spoolkit.tools import repair as _repair

__all__ = ["fsck"]


@click.command("fsck")
@click.argument("path", type=SPOOL_PATH)
@click.option(
    "--repair",
    is_flag=True,
    help="Rewrite damaged chunk files, keeping every intact record (lanes held by a live "
    "process are skipped).",
)
@click.option(
    "--new-uid",
    is_flag=True,
    help="With --repair: when no chunk header or meta.json of a lane holds its uid any more, "
    "write a new random one (the record ids of that lane change). Without it such a lane is "
    "left as it was.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def fsck(path: str, repair: bool, new_uid: bool, as_json: bool) -> None:
    """Verify every checksum in every lane of the spool at PATH; report damaged regions and
    records lost (a chunk file cut, emptied or deleted: their ids, ``<uid>-<n>``).

    Counts the lanes' chunk files; the dead letters' (``dead/``) are counted apart. Exits 1
    when damage or a loss is found. With --repair, rewrites each damaged chunk of the lanes no
    live process holds, keeping every intact record and its acknowledgement, names the lanes
    it skipped, and exits 0 if the spool is clean, 3 if damage is left only in lanes a live
    process holds. A repair never changes a record id: a lane whose uid survives nowhere is
    left alone unless --new-uid.

    Example: spoolkit fsck /var/spool/app --json
    """
    fixed = _repair.repair(path, new_uid=new_uid) if repair else None
    report = fixed.before if fixed is not None else insp.fsck(path)
    final = fixed.after if fixed is not None else report
    if as_json:
        emit_json(_fsck_json(report, fixed))
    else:
        _print_fsck(report, fixed)
    if final.ok or (fixed is not None and not final.damage):
        return  # after a repair, records lost (reported above) are past repairing: exit 0
    if fixed is not None and fixed.skipped_damage:
        raise Busy(f"damage is left in lanes a live process holds: {holders(fixed.skipped)}")
    sys.exit(EXIT_PROBLEM)


def _fsck_json(report: insp.FsckReport, fixed: _repair.RepairReport | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": report.path,
        "ok": report.ok,
        "chunk_files": len(report.lane_chunks),
        "dead_chunk_files": len(report.dead_chunks),
        "records": report.records,
        "pending": report.pending,
        "dead_letters": report.dead_letters,
        "damaged_bytes": report.damaged_bytes,
        "lost_records": report.lost_records,
        "damage": [{"chunk": d.chunk, "start": d.start, "end": d.end} for d in report.damage]
        + [_lost_json(r) for r in report.lost],
        "warnings": list(report.warnings),
        "live": report.live,
        "lanes": [lane_json(lane) for lane in report.lanes],
    }
    if fixed is not None:
        out["repair"] = {
            "rewritten": list(fixed.rewritten),
            "kept_records": fixed.kept_records,
            "kept_pending": fixed.kept_pending,
            "dropped_bytes": fixed.dropped_bytes,
            "ok_after": not fixed.after.damage,
            "lost_after": fixed.after.lost_records,
            "skipped": [{"lane": n, "pid": pid} for n, pid in fixed.skipped],
            "refused": [{"lane": n, "why": why} for n, why in fixed.refused],
            "new_uids": [{"lane": n, "uid": uid} for n, uid in fixed.new_uids],
        }
    return out


def _in_use(pid: int | None) -> str:
    """Who holds a lane's lock, truthfully: the pid in its lock file may be gone while a
    process it forked (a helper, a daemon) still holds the lock."""
    if not pid:
        return "in use by another process (no pid in its lock file)"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (
            f"its lock is held, but pid {pid} (in its lock file) is not running: a process it "
            "started holds the lock (find it with `fuser` on the lane's lock file)"
        )
    except PermissionError:
        pass  # alive, another user's
    return f"in use by pid {pid}"


def _lost_json(r: insp.LostRecords) -> dict[str, Any]:
    """A loss in fsck's ``damage`` list: told apart from a damaged region by its ``lost`` key."""
    return {
        "chunk": r.chunk,
        "lost": {
            "first_id": r.first_id,
            "last_id": r.last_id,
            "count": r.count,
            "reason": r.reason,
        },
    }


def _print_fsck(report: insp.FsckReport, fixed: _repair.RepairReport | None) -> None:
    out = console()
    lanes = f"{len(report.lanes)} lanes, " if len(report.lanes) > 1 else ""
    dead = f", {report.dead_letters:,} dead letter(s)" if report.dead_letters else ""
    out.print(
        f"{report.path}: {lanes}{len(report.lane_chunks)} chunk file(s) (dead letters' not "
        f"counted: {len(report.dead_chunks)} in dead/), {report.records:,} intact record(s), "
        f"{report.pending:,} pending{dead}"
    )
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    if fixed is not None:
        for n, pid in fixed.skipped:
            out.print(f"skipped lane {n}: {_in_use(pid)}")
    if report.ok:
        out.print("[green]ok:[/] every checksum verified, no record missing")
        return
    if report.damage:
        _print_damage(out, report)
    for r in report.lost:
        out.print(f"[red]lost:[/] {r.describe()}")
    if fixed is None:
        if report.damage:
            out.print(
                f"[red]damaged:[/] {len(report.damage)} region(s), {report.damaged_bytes:,} "
                "byte(s); `spoolkit fsck --repair` keeps every intact record"
            )
        if report.lost:
            out.print(
                "[red]records lost:[/] no repair brings them back; they stay reported until "
                "the records before them are delivered"
            )
        return
    out.print(
        f"repaired {len(fixed.rewritten)} chunk file(s): kept {fixed.kept_records:,} "
        f"record(s) ({fixed.kept_pending:,} pending), dropped {fixed.dropped_bytes:,} "
        "damaged byte(s)"
    )
    for n, why in fixed.refused:
        out.print(f"[red]not repaired:[/] lane {n}: {why}")
    for n, uid in fixed.new_uids:
        out.print(f"[yellow]new uid:[/] lane {n} had no uid left anywhere: it is now {uid}")
    if fixed.after.damage:
        out.print("[red]damage remains after the repair[/]")
    else:
        out.print("[green]ok:[/] every checksum verified after the repair")
    if fixed.after.lost:
        out.print(
            "[yellow]records lost:[/] no repair brings them back (listed above); `fsck` keeps "
            "reporting them until the records before them are delivered"
        )


def _print_damage(out: Console, report: insp.FsckReport) -> None:
    table = Table("chunk", "start", "end", "bytes", title="damaged regions", title_justify="left")
    for d in report.damage:
        table.add_row(d.chunk, str(d.start), str(d.end), str(d.length))
    out.print(table)
    for lane in report.lanes:
        if lane.damaged_regions and lane.held_by_other():
            out.print(
                f"[yellow]note:[/] lane {lane.number} is in use by pid {lane.holder_pid or '?'}: "
                "damage at the very end of its newest chunk may be a record being written; "
                "check again, or stop that process first"
            )
