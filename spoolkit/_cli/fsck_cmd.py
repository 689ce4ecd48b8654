"""``spoolkit fsck``: verify every checksum of a spool, and repair it on request."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from spoolkit import _inspect as insp
from spoolkit import _repair
from spoolkit._cli.common import EXIT_PROBLEM, SPOOL_PATH, console, emit_json

__all__ = ["fsck"]


@click.command("fsck")
@click.argument("path", type=SPOOL_PATH)
@click.option(
    "--repair", is_flag=True, help="Rewrite damaged chunk files, keeping every intact record."
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def fsck(path: str, repair: bool, as_json: bool) -> None:
    """Verify every checksum in the spool at PATH and report damaged regions.

    Exits 1 when damage is found. With --repair (which needs the spool not to be in use),
    rewrites each damaged chunk keeping every intact record and its acknowledgement, then
    exits 0 if the spool is clean.
    """
    fixed = _repair.repair(path) if repair else None
    report = fixed.before if fixed is not None else insp.fsck(path)
    final = fixed.after if fixed is not None else report
    if as_json:
        emit_json(_fsck_json(report, fixed))
    else:
        _print_fsck(report, fixed)
    if not final.ok:
        sys.exit(EXIT_PROBLEM)


def _fsck_json(report: insp.FsckReport, fixed: _repair.RepairReport | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": report.path,
        "ok": report.ok,
        "chunk_files": len(report.chunks),
        "records": report.records,
        "pending": report.pending,
        "damaged_bytes": report.damaged_bytes,
        "damage": [{"chunk": d.chunk, "start": d.start, "end": d.end} for d in report.damage],
        "warnings": list(report.warnings),
        "live": report.live,
    }
    if fixed is not None:
        out["repair"] = {
            "rewritten": list(fixed.rewritten),
            "kept_records": fixed.kept_records,
            "kept_pending": fixed.kept_pending,
            "dropped_bytes": fixed.dropped_bytes,
            "ok_after": fixed.after.ok,
        }
    return out


def _print_fsck(report: insp.FsckReport, fixed: _repair.RepairReport | None) -> None:
    out = console()
    out.print(
        f"{report.path}: {len(report.chunks)} chunk file(s), {report.records:,} intact "
        f"record(s), {report.pending:,} pending"
    )
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    if report.ok:
        out.print("[green]ok:[/] every checksum verified")
        return
    table = Table("chunk", "start", "end", "bytes", title="damaged regions", title_justify="left")
    for d in report.damage:
        table.add_row(d.chunk, str(d.start), str(d.end), str(d.length))
    out.print(table)
    if report.live:
        out.print(
            "[yellow]note:[/] the spool is in use: damage at the very end of the newest "
            "chunk may be a record being written; check again, or stop the owner first"
        )
    if fixed is None:
        out.print(
            f"[red]damaged:[/] {len(report.damage)} region(s), {report.damaged_bytes:,} "
            "byte(s); `spoolkit fsck --repair` keeps every intact record"
        )
        return
    out.print(
        f"repaired {len(fixed.rewritten)} chunk file(s): kept {fixed.kept_records:,} "
        f"record(s) ({fixed.kept_pending:,} pending), dropped {fixed.dropped_bytes:,} "
        "damaged byte(s)"
    )
    if fixed.after.ok:
        out.print("[green]ok:[/] every checksum verified after the repair")
    else:
        out.print("[red]damage remains after the repair[/]")
