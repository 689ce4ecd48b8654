"""``spoolkit drain``: deliver a spool's backlog to a sink once, then exit."""

from __future__ import annotations

import importlib
import time

import click

from spoolkit import Spool
from spoolkit._cli.common import (
    SPOOL_PATH,
    Failure,
    progress,
    serializer_option,
    spool_serializer,
)

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
    """Deliver the backlog of the spool at PATH to SINK_URL once, then exit.

    Failed batches are retried and then dead-lettered as a running spool would. Exits 0 when
    everything was delivered, 1 when records were dead-lettered or left over at --timeout.
    Needs the spool not to be in use.
    """
    serializer = spool_serializer(path, serializer_spec)
    # imported when asked for: the sinks module is only needed by this command
    sink = importlib.import_module("spoolkit.sinks").from_url(url)
    spool = Spool(path, sink, workers=workers, batch_size=batch_size, serializer=serializer)
    total = spool.stats().backlog
    deadline = None if timeout is None else time.monotonic() + timeout
    spool.start()
    finished = False
    try:
        with progress() as bar:
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
