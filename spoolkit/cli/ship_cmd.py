"""``spoolkit ship``: one long-running process that delivers every lane of a spool.

The Filebeat/Vector-agent shape: application processes write the spool without delivering it
(``Spool(..., consume=False)``, a producer-only ``SpoolHandler``), and one ``spoolkit ship``
delivers what they write. It adopts every lane nobody holds (every 0.5 s), and producer-only
processes hand their lanes over to it while it runs. SIGTERM or SIGINT stop it: it delivers
for up to ``--stop-timeout`` seconds more, then lets go of its lanes; what it did not deliver
stays on disk for the next consumer.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from spoolkit import Spool
from spoolkit._internal.redact import redact_url, secrets_in_url
from spoolkit.cli.common import (
    SPOOL_PATH,
    checked_serializer,
    custom_serializer,
    emit_json,
    serializer_option,
)
from spoolkit.errors import PathError
from spoolkit.tools import inspect as insp
from spoolkit.typing import Serializer

__all__ = ["ship"]

POLL = 0.2  # seconds between two looks at the signals received (and slices of the final flush)


@click.command(
    "ship",
    epilog="""\b
Example:
  spoolkit ship /var/spool/app --to https://logs.example.com/ingest --stop-timeout 30""",
)
@click.argument("path", type=SPOOL_PATH)
@click.option("--to", "url", required=True, help="Sink URL (http://, jsonl://, stdout://...).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--stop-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM or SIGINT, the most seconds spent delivering what waits before exiting.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was delivered as JSON.")
@serializer_option
def ship(
    path: str,
    url: str,
    *,
    workers: int,
    batch_size: int,
    stop_timeout: float,
    as_json: bool,
    serializer_spec: str | None,
) -> None:
    """Deliver every lane of the spool at PATH to SINK_URL until SIGTERM or SIGINT.

    Run one next to producer-only processes (web workers writing with consume=False): it
    delivers the lanes nobody holds and those the producers hand over, and creates PATH if
    it does not exist yet. On SIGTERM or SIGINT it delivers for up to --stop-timeout seconds
    (a second signal stops at once), prints what it delivered and exits 0; what it did not
    deliver stays on disk.
    """
    serializer = _serializer(path, serializer_spec)
    # imported when asked for: the sinks module is only needed by the delivering commands
    sink = importlib.import_module("spoolkit.sinks").from_url(url)
    with _signals() as received:
        spool = Spool(path, sink, workers=workers, batch_size=batch_size, serializer=serializer)
        try:
            spool.start()
            shown = redact_url(url) if secrets_in_url(url) else url
            click.echo(f"shipping {spool.path} to {shown}; SIGTERM or Ctrl-C stops", err=True)
            while not received:
                time.sleep(POLL)
            click.echo(
                f"stopping: delivering for up to {stop_timeout:g}s; signal again to stop now "
                "(what is not delivered stays on disk)",
                err=True,
            )
            _finish(spool, stop_timeout, received)
        finally:
            spool.stop(drain=False, timeout=0)  # a no-op after _finish: a failed start
    s = spool.stats()
    summary = {
        "delivered": s.delivered,
        "dead_lettered": s.dead_lettered,
        "retried": s.retried,
        "left": s.backlog,
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"delivered {s.delivered:,}, dead-lettered {s.dead_lettered:,}, retried "
            f"{s.retried:,}, left {s.backlog:,} on disk"
        )


def _serializer(path: str, spec: str | None) -> str | Serializer:
    """``--serializer``'s, else the spool's (if it holds one yet: PATH may be missing or an
    empty volume), else ``json``: a shipper started before its producers must not choose
    for them, and SpoolHandler, the usual producer, spools JSON."""
    chosen = custom_serializer(spec)
    if chosen is None:
        with contextlib.suppress(PathError):
            chosen = insp.serializer_name(path)
    return checked_serializer(chosen or "json")


def _finish(spool: Spool, stop_timeout: float, received: list[int]) -> None:
    """Deliver what waits until done, ``stop_timeout`` or another signal; then stop."""
    deadline = time.monotonic() + stop_timeout
    signals = len(received)
    while len(received) == signals:
        left = deadline - time.monotonic()
        if left <= 0 or spool.flush(min(POLL, left)):
            break
    spool.stop(drain=False, timeout=max(0.0, deadline - time.monotonic()))


@contextmanager
def _signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT, noted in the list yielded (the main loop polls it)."""
    received: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    kinds = (signal.SIGTERM, signal.SIGINT)
    before: list[Any] = [signal.signal(kind, note) for kind in kinds]
    try:
        yield received
    finally:
        for kind, handler in zip(kinds, before, strict=True):
            signal.signal(kind, handler)
