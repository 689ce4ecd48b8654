"""``spoolkit drain``: deliver a spool's backlog to a sink once, then exit."""

from __future__ import annotations

import importlib
import time

import click

from spoolkit import Spool
from spoolkit._cli.common import (
    SPOOL_PATH,
    Busy,
    Failure,
    progress,
    serializer_option,
    spool_serializer,
)
from spoolkit._cli.lanes import held_by_others, holders

__all__ = ["drain"]


@click.command("drain")
@click.argument("path", type=SPOOL_PATH)
@click.option("--to", "url", required=True, help="Sink URL (http://, jsonl://, stdout://...).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@serializer_option
def drain(
    path: str,
    url: str,
    *,
    workers: int,
    batch_size: int,
    timeout: float | None,
    serializer_spec: str | None,
) -> None:
    """Deliver the backlog of every lane of the spool at PATH that no live process holds to
    SINK_URL once, then exit.

    Failed batches are retried and then dead-lettered as a running spool would. Lanes a live
    process holds are skipped and named with its pid (producer-only processes hand theirs over
    while the drain runs). Exits 0 when everything was delivered, 1 when records were
    dead-lettered or left over at --timeout, 3 when records are left in lanes live processes
    hold.
    """
    serializer = spool_serializer(path, serializer_spec)
    # imported when asked for: the sinks module is only needed by this command
    sink = importlib.import_module("spoolkit.sinks").from_url(url)
    spool = Spool(path, sink, workers=workers, batch_size=batch_size, serializer=serializer)
    deadline = None if timeout is None else time.monotonic() + timeout
    spool.start()
    finished = False
    try:
        with progress() as bar:
            task = bar.add_task("draining", total=spool.stats().backlog)
            while not finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                finished = spool.flush(0.2 if left is None else min(0.2, left))
                s = spool.stats()
                done = s.delivered + s.dead_lettered
                bar.update(task, completed=done, total=done + s.backlog)
        skipped = held_by_others(spool.path, spool.lanes_held())
    finally:
        spool.stop(drain=False)
    s = spool.stats()
    click.echo(
        f"delivered {s.delivered:,}, dead-lettered {s.dead_lettered:,}, retried "
        f"{s.retried:,}, left {s.backlog:,}"
    )
    for lane in skipped:
        click.echo(
            f"skipped lane {lane.number}: in use by pid {lane.holder_pid or '?'}, "
            f"{lane.backlog:,} record(s) waiting"
        )
    if not finished:
        raise Failure(f"timed out with {s.backlog:,} record(s) left in the spool")
    if s.dead_lettered:
        raise Failure(f"{s.dead_lettered:,} record(s) were dead-lettered: see `spoolkit dead`")
    waiting = [lane for lane in skipped if lane.backlog]
    if waiting:
        held = holders((lane.number, lane.holder_pid) for lane in waiting)
        raise Busy(
            f"{sum(lane.backlog for lane in waiting):,} record(s) wait in lanes live "
            f"processes hold: {held}"
        )
