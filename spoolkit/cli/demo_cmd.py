"""``spoolkit demo``: the crash demo (log, SIGKILL half-way, restart, count the losses)."""

from __future__ import annotations

import os
import signal
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from spoolkit.cli.common import Failure, command_name, console, emit_json, progress
from spoolkit.errors import PathError
from spoolkit.tools import demo as _demo
from spoolkit.tools import inspect as insp

__all__ = ["EXIT_INTERRUPTED", "demo"]

EXIT_INTERRUPTED = 130
"""The exit status after Ctrl-C, as a shell reports a process ended by SIGINT."""


@click.command(
    "demo",
    epilog="""\b
Examples:
  spoolkit demo
  spoolkit demo --records 10000 --failure-rate 0.5 --dir /tmp/spoolkit-demo""",
)
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
    killed with SIGKILL and started again. Exits 1 if any record was lost. Ctrl-C stops the
    demo, says what is left on disk and how to go on, and exits 130.
    """
    options = _demo.DemoOptions(records, failure_rate, directory, kill_at, timeout, seed)
    err = Console(stderr=True)
    with progress() as bar:
        logged = bar.add_task("logged", total=records)
        delivered = bar.add_task("delivered", total=records)

        def show(p: _demo.DemoProgress) -> None:
            bar.update(logged, completed=p.logged, description=f"logged ({p.phase})")
            bar.update(delivered, completed=p.delivered)

        try:
            result = _demo.run(options, show)
        except KeyboardInterrupt:
            result = None
    if result is None:
        _interrupted(directory)
    if as_json:
        emit_json({**_demo_rows(result), "ok": result.ok, "spool": result.spool})
    else:
        _print_demo(result, err)
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
    console().print(table)
    console().print(f"the spool is left at {r.spool}: try `{command_name()} inspect {r.spool}`")


def _interrupted(directory: str) -> NoReturn:
    """After Ctrl-C (the app process is gone, the collector stopped): say what is on disk and
    how to go on, then exit 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: let this finish printing
    spool = os.path.join(os.path.abspath(directory), "spool")
    name = command_name()
    _say("interrupted: the demo stopped before the end")
    try:
        info = insp.inspect_spool(spool)
    except PathError:
        _say(f"no spool was created yet ({spool}); run `{name} demo` again")
        raise SystemExit(EXIT_INTERRUPTED) from None
    _say(
        f"on disk in {spool}: {info.backlog:,} record(s) waiting, {info.dead_letters:,} dead "
        "letter(s); nothing logged is lost"
    )
    _say(f"  look at them:    {name} inspect {spool}")
    _say(
        f"  deliver them:    {name} drain {spool} --to jsonl://{os.path.abspath(directory)}/delivered.jsonl"
    )
    _say(f"  run it again:    {name} demo  (starts afresh: empties {spool} first)")
    raise SystemExit(EXIT_INTERRUPTED)


def _say(line: str) -> None:
    """A plain line on stderr, never wrapped: paths and commands stay whole to copy."""
    click.echo(line, err=True)
