"""``spoolkit drain``: deliver a spool's backlog to a sink once, then exit.

A drain never empties a spool into dead letters because the sink is wrong: see
:mod:`spoolkit.cli.drain_guard` (the sink is checked before anything is taken, and the drain
stops, leaving the records queued, when every delivery fails the same way).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import click

from spoolkit import RetryPolicy, Spool
from spoolkit._internal.redact import redact_url
from spoolkit.cli.common import (
    SPOOL_PATH,
    Busy,
    Failure,
    emit_json,
    progress,
    serializer_option,
    spool_serializer,
)
from spoolkit.cli.drain_guard import Guard, reachable, retrying
from spoolkit.cli.lanes import held_by_others, holders

__all__ = ["drain"]

POLL = 0.2  # seconds between two looks at the progress and at the guard


@click.command(
    "drain",
    epilog="""\b
Example:
  spoolkit drain /var/spool/app --to https://logs.example.com/ingest --timeout 600
  spoolkit drain /var/spool/app --to jsonl:///tmp/backlog.jsonl --no-dead-letter --json""",
)
@click.argument("path", type=SPOOL_PATH)
@click.option("--to", "url", required=True, help="Sink URL (http://, jsonl://, stdout://...).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Attempts per batch before it is dead-lettered. Default: a passing error (network, "
    "5xx, 429) without limit, any other error 5 times, a refusal (4xx) once.",
)
@click.option(
    "--no-dead-letter",
    "no_dead_letter",
    is_flag=True,
    help="Never dead-letter: a batch that would be stops the drain and stays queued.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@serializer_option
def drain(
    path: str,
    url: str,
    *,
    workers: int,
    batch_size: int,
    timeout: float | None,
    max_attempts: int | None,
    no_dead_letter: bool,
    as_json: bool,
    serializer_spec: str | None,
) -> None:
    """Deliver the backlog of every lane of the spool at PATH that no live process holds to
    the sink at --to once, then exit.

    The sink is checked first: a host that refuses connections, or a sink that refuses the
    first batch for good (a 404, a 401), stops the drain before any record is dead-lettered.
    Once a batch got through, failed batches are retried and then dead-lettered as a running
    spool would (unless --no-dead-letter), but when deliveries keep failing the same way the
    drain stops and the records stay queued. Lanes a live process holds are skipped and named
    with its pid. Exits 0 when everything was delivered; 1 when the sink failed, records were
    dead-lettered or left over at --timeout; 3 when records are left in lanes live processes
    hold.
    """
    serializer = spool_serializer(path, serializer_spec)
    # imported when asked for: the sinks module is only needed by this command
    sink = importlib.import_module("spoolkit.sinks").from_url(url)
    shown = redact_url(url)
    unreachable = reachable(url)
    if unreachable is not None:
        _stop_early(path, as_json, f"{unreachable}: check --to {shown}")
    guard = Guard(sink, dead_letter=not no_dead_letter)
    try:
        guard.open()
    except Exception as exc:
        _stop_early(path, as_json, f"cannot open the sink {shown}: {exc}")
    policy = RetryPolicy(max_attempts=max_attempts)
    spool = Spool(
        path,
        guard,
        workers=workers,
        batch_size=batch_size,
        serializer=serializer,
        retry=retrying(policy, guard),
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = False
    try:
        spool.start()
        finished = _run(spool, guard, deadline)
        skipped = held_by_others(spool.path, spool.lanes_held())
    finally:
        spool.stop(drain=False)
    _report(spool, guard, shown, skipped, finished=finished, as_json=as_json)


def _run(spool: Spool, guard: Guard, deadline: float | None) -> bool:
    """Deliver until the spool is empty (True), the guard stops the drain or the deadline."""
    with progress() as bar:
        task = bar.add_task("delivered", total=spool.stats().backlog)

        def show() -> None:
            s = spool.stats()
            dead = f", {s.dead_lettered:,} dead-lettered" if s.dead_lettered else ""
            total = s.delivered + s.dead_lettered + s.backlog
            bar.update(task, completed=s.delivered, total=total, description=f"delivered{dead}")

        try:
            while guard.stopped is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if spool.flush(POLL if left is None else min(POLL, left)):
                    return guard.stopped is None
                show()
            return False
        finally:
            show()


def _stop_early(path: str, as_json: bool, why: str) -> None:
    """Stop before the spool is opened: nothing was taken."""
    if as_json:
        emit_json({"delivered": 0, "dead_lettered": 0, "stopped": why, "path": path})
    raise Failure(f"{why}; nothing was taken from {path}")


def _report(
    spool: Spool,
    guard: Guard,
    shown: str,
    skipped: list[Any],
    *,
    finished: bool,
    as_json: bool,
) -> None:
    s = spool.stats()
    if as_json:
        out: dict[str, Any] = {
            "delivered": s.delivered,
            "dead_lettered": s.dead_lettered,
            "retried": s.retried,
            "left": s.backlog,
            "stopped": guard.stopped,
            "timed_out": not finished and guard.stopped is None,
            "skipped_lanes": [
                {"lane": lane.number, "pid": lane.holder_pid, "backlog": lane.backlog}
                for lane in skipped
            ],
        }
        emit_json(out)
    else:
        click.echo(
            f"delivered {s.delivered:,}, dead-lettered {s.dead_lettered:,}, retried "
            f"{s.retried:,}, left {s.backlog:,}"
        )
        for lane in skipped:
            click.echo(
                f"skipped lane {lane.number}: in use by pid {lane.holder_pid or '?'}, "
                f"{lane.backlog:,} record(s) waiting"
            )
    if guard.stopped is not None:
        raise Failure(
            f"stopped: {guard.stopped}. {s.backlog:,} record(s) are still queued in "
            f"{spool.path}; fix the sink (check --to {shown}), then run drain again"
        )
    if not finished:
        raise Failure(f"timed out with {s.backlog:,} record(s) left in the spool")
    if s.dead_lettered:
        raise Failure(
            f"{s.dead_lettered:,} record(s) were dead-lettered: see `spoolkit dead list "
            f"{spool.path}`"
        )
    waiting = [lane for lane in skipped if lane.backlog]
    if waiting:
        held = holders((lane.number, lane.holder_pid) for lane in waiting)
        raise Busy(
            f"{sum(lane.backlog for lane in waiting):,} record(s) wait in lanes live "
            f"processes hold: {held}"
        )
