"""The ``spoolkit`` command line: look inside spools, repair them, drain them, run the demo.

Needs the ``cli`` extra (``pip install 'spoolkit[cli]'``: click and rich). The work is done by
library modules (:mod:`spoolkit._inspect`, :mod:`spoolkit._demo`); this module parses options
and formats results.

Exit codes: 0 all is well; 1 a problem was found (damage, lost demo records, a failed
delivery); 2 a usage error or a bad path; 3 the spool is in use by another process.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

try:
    import click
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the spoolkit command line needs click and rich: pip install 'spoolkit[cli]'"
    ) from exc

from spoolkit import Spool, __version__, _demo, _repair
from spoolkit import _inspect as insp
from spoolkit.errors import ConfigError, FormatError, LockedError, SpoolError

__all__ = ["EXIT_BUSY", "EXIT_OK", "EXIT_PROBLEM", "EXIT_USAGE", "cli", "main"]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_BUSY = 3

_SPOOL_PATH = click.Path(file_okay=True, dir_okay=True, path_type=str)


class Failure(click.ClickException):
    """A one-line error: a problem was found (exit 1)."""

    exit_code = EXIT_PROBLEM


class BadInput(Failure):
    """A one-line error: a bad path or argument (exit 2)."""

    exit_code = EXIT_USAGE


class Busy(Failure):
    """A one-line error: the spool is in use by another process (exit 3)."""

    exit_code = EXIT_BUSY


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


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def json_safe(value: Any) -> Any:
    """``value`` if JSON can carry it as is (recursively), else its ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_safe(v) for k, v in value.items()}
    return repr(value)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spoolkit")
def cli() -> None:
    """Inspect, check, repair and drain spoolkit spools; run the crash demo.

    Exit codes: 0 ok, 1 problems found, 2 usage or bad path, 3 spool in use.
    """


# -- inspect / peek ----------------------------------------------------------------------------


@cli.command("inspect")
@click.argument("path", type=_SPOOL_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(path: str, as_json: bool) -> None:
    """Summarise the spool at PATH: backlog, disk use, oldest record, dead letters.

    Read-only and lock-free: safe on a spool another process is writing to.
    """
    info = insp.inspect_spool(path)
    age = info.oldest_age()
    if as_json:
        _emit_json(
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
    table.add_row("backlog", f"{info.backlog:,} record(s), {_size(info.record_bytes)}")
    table.add_row("oldest record", _age(age) + (" old" if age is not None else ""))
    table.add_row("chunk files", f"{len(info.chunks)}")
    table.add_row("bytes on disk", _size(info.bytes_on_disk))
    table.add_row("dead letters", f"{info.dead_letters:,}")
    table.add_row("last error", info.last_error or "-")
    table.add_row("serializer", info.serializer or "?")
    if info.damaged_regions:
        table.add_row("damage", f"{info.damaged_regions} region(s): run `spoolkit fsck`")
    _console().print(table)


@cli.command()
@click.argument("path", type=_SPOOL_PATH)
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def peek(path: str, count: int, as_json: bool) -> None:
    """Show the next records of the spool at PATH without consuming them."""
    records = insp.peek(path, count)
    if as_json:
        _emit_json([_record_json(r) for r in records])
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
    }


def _print_records(records: list[insp.PeekedRecord], empty: str) -> None:
    console = _console()
    if not records:
        console.print(empty)
        return
    table = Table("id", "enqueued (UTC)", "item")
    for r in records:
        shown = repr(r.item) if r.decode_error is None else f"<{r.decode_error}> {r.payload!r}"
        table.add_row(str(r.id), _when(r.enqueued_at), shown)
    console.print(table)


# -- fsck ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("path", type=_SPOOL_PATH)
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
        _emit_json(_fsck_json(report, fixed))
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
    console = _console()
    console.print(
        f"{report.path}: {len(report.chunks)} chunk file(s), {report.records:,} intact "
        f"record(s), {report.pending:,} pending"
    )
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if report.ok:
        console.print("[green]ok:[/] every checksum verified")
        return
    table = Table("chunk", "start", "end", "bytes", title="damaged regions", title_justify="left")
    for d in report.damage:
        table.add_row(d.chunk, str(d.start), str(d.end), str(d.length))
    console.print(table)
    if report.live:
        console.print(
            "[yellow]note:[/] the spool is in use: damage at the very end of the newest "
            "chunk may be a record being written; check again, or stop the owner first"
        )
    if fixed is None:
        console.print(
            f"[red]damaged:[/] {len(report.damage)} region(s), {report.damaged_bytes:,} "
            "byte(s); `spoolkit fsck --repair` keeps every intact record"
        )
        return
    console.print(
        f"repaired {len(fixed.rewritten)} chunk file(s): kept {fixed.kept_records:,} "
        f"record(s) ({fixed.kept_pending:,} pending), dropped {fixed.dropped_bytes:,} "
        "damaged byte(s)"
    )
    if fixed.after.ok:
        console.print("[green]ok:[/] every checksum verified after the repair")
    else:
        console.print("[red]damage remains after the repair[/]")


# -- dead letters ------------------------------------------------------------------------------


@cli.command()
@click.argument("path", type=_SPOOL_PATH)
@click.argument("action", type=click.Choice(["list", "requeue", "purge"]))
@click.option("--id", "ids", multiple=True, help="Only this record id (repeatable).")
@click.option("--yes", is_flag=True, help="Purge without asking.")
@click.option("--json", "as_json", is_flag=True, help="list: print the dead letters as JSON.")
def dead(path: str, action: str, ids: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """List, requeue or purge the dead letters of the spool at PATH.

    list is read-only and lock-free. requeue puts dead letters back into the spool under their
    record ids; purge deletes them for good. Both act on every dead letter unless --id is
    given, and need the spool not to be in use.
    """
    if action == "list":
        letters = [d for d in insp.dead_letters(path) if not ids or d.id in ids]
        if as_json:
            _emit_json([_dead_json(d) for d in letters])
        else:
            _print_dead(letters)
        return
    insp.spool_dir(path)
    serializer = insp.inspect_spool(path).serializer or "pickle"
    if serializer not in ("pickle", "json", "raw"):
        raise BadInput(
            f"the spool uses the custom serializer {serializer!r}: requeue or purge from the "
            "application, with spool.dead_letters"
        )
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
    console = _console()
    if not letters:
        console.print("no dead letters")
        return
    table = Table("id", "last attempt (UTC)", "attempts", "error", "item")
    for d in letters:
        item = repr(d.item) if d.decode_error is None else f"<{d.decode_error}>"
        error = f"{d.error_type.rpartition('.')[2]}: {d.error}"
        table.add_row(d.id, _when(d.last_attempt_at), str(d.attempts), error, item)
    console.print(table)


# -- drain ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("path", type=_SPOOL_PATH)
@click.option("--to", "url", required=True, help="Sink URL (http://, jsonl://, stdout://...).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
def drain(path: str, url: str, workers: int, batch_size: int, timeout: float | None) -> None:
    """Deliver the backlog of the spool at PATH to SINK_URL once, then exit.

    Failed batches are retried and then dead-lettered as a running spool would. Exits 0 when
    everything was delivered, 1 when records were dead-lettered or left over at --timeout.
    Needs the spool not to be in use.
    """
    serializer = insp.inspect_spool(path).serializer or "pickle"
    # imported when asked for: the sinks module is only needed by this command
    sink = importlib.import_module("spoolkit.sinks").from_url(url)
    spool = Spool(path, sink, workers=workers, batch_size=batch_size, serializer=serializer)
    total = spool.stats().backlog
    deadline = None if timeout is None else time.monotonic() + timeout
    spool.start()
    finished = False
    try:
        with _progress() as bar:
            task = bar.add_task("draining", total=total)
            while not finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                finished = spool.flush(0.2 if left is None else min(0.2, left))
                s = spool.stats()
                bar.update(task, completed=s.delivered + s.dead_lettered)
    finally:
        spool.stop(drain=False)
    s = spool.stats()
    click.echo(
        f"delivered {s.delivered:,}, dead-lettered {s.dead_lettered:,}, retried "
        f"{s.retried:,}, left {s.backlog:,}"
    )
    if not finished:
        raise Failure(f"timed out with {s.backlog:,} record(s) left in the spool")
    if s.dead_lettered:
        raise Failure(f"{s.dead_lettered:,} record(s) were dead-lettered: see `spoolkit dead`")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


# -- demo ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--records", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--failure-rate",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 0.95),
    help="Share of requests the collector refuses with 503.",
)
@click.option(
    "--dir",
    "directory",
    default=".demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo keeps its spool (emptied first) and the app's log.",
)
@click.option(
    "--kill-at",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Share of the records logged before the app is killed.",
)
@click.option("--seed", type=int, help="Seed of the collector's refusals.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(
    *,
    records: int,
    failure_rate: float,
    directory: str,
    kill_at: float,
    seed: int | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Log records through a spool, SIGKILL the app half-way, restart it, count the losses.

    The app logs --records records through SpoolHandler; its spool delivers them to a local
    HTTP collector on 127.0.0.1 that refuses a share of requests. Half-way through, the app is
    killed with SIGKILL and started again. Exits 1 if any record was lost.
    """
    options = _demo.DemoOptions(records, failure_rate, directory, kill_at, timeout, seed)
    console = Console(stderr=True)
    with _progress() as bar:
        logged = bar.add_task("logged", total=records)
        delivered = bar.add_task("delivered", total=records)

        def show(p: _demo.DemoProgress) -> None:
            bar.update(logged, completed=p.logged, description=f"logged ({p.phase})")
            bar.update(delivered, completed=p.delivered)

        result = _demo.run(options, show)
    if as_json:
        _emit_json({**_demo_rows(result), "ok": result.ok, "spool": result.spool})
    else:
        _print_demo(result, console)
    if not result.ok:
        raise Failure(f"{result.lost:,} record(s) were lost")


def _demo_rows(r: _demo.DemoResult) -> dict[str, Any]:
    return {
        "produced": r.produced,
        "delivered_unique": r.delivered,
        "duplicates": r.duplicates,
        "lost": r.lost,
        "retries": r.rejected,
        "retried_records": r.retried_records,
        "dead_letters": r.dead_letters,
        "records_per_second": round(r.records_per_second, 1),
        "seconds": round(r.seconds, 3),
        "killed_pid": r.killed_pid,
        "logged_at_kill": r.logged_at_kill,
        "backlog_at_kill": r.backlog_at_kill,
    }


def _print_demo(r: _demo.DemoResult, err: Console) -> None:
    err.print(
        f"killed the app (pid {r.killed_pid}) with SIGKILL after {r.logged_at_kill:,} "
        f"record(s) were logged; {r.backlog_at_kill:,} were on disk, not yet delivered"
    )
    table = Table("", "records", title="spoolkit demo", title_justify="left")
    table.add_row("produced", f"{r.produced:,}")
    table.add_row("delivered (unique)", f"{r.delivered:,}")
    table.add_row("duplicates", f"{r.duplicates:,}")
    style = "green" if r.lost == 0 else "bold red"
    table.add_row("lost", f"[{style}]{r.lost:,}[/]")
    table.add_row("retries (503s)", f"{r.rejected:,} request(s), {r.retried_records:,} record(s)")
    table.add_row("dead letters", f"{r.dead_letters:,}")
    table.add_row("records/s", f"{r.records_per_second:,.0f} ({r.seconds:.1f}s in all)")
    _console().print(table)
    _console().print(f"the spool is left at {r.spool}: try `spoolkit inspect {r.spool}`")


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line (the ``spoolkit`` console script)."""
    run: Callable[..., Any] = cli.main
    run(args=argv, prog_name="spoolkit")
    raise SystemExit(EXIT_OK)  # pragma: no cover - cli.main exits itself
