"""The processes the multi-process crash loop kills: writers and consumers of one spool.

Usage: ``python -m spoolkit._torture.procs_child CONFIG_JSON`` (built by
:mod:`spoolkit._torture.procs`). ``role`` in the config says what the process is:

- ``writer``: puts numbered records (:func:`~spoolkit._torture.child.make_item`) into the
  spool, through a :class:`~spoolkit.Spool` (``kind="spool"``: ``put`` and ``put_many``) or a
  :class:`~spoolkit.SpoolHandler` (``kind="handler"``: ``logger.info(..., extra=item)``), as a
  producer-only process (``consume=False``) or one that also delivers (``consume=True``).
  Then it says ``@idle`` and waits to be killed or told to exit.
- ``consumer``: a ``Spool(consume=True)`` delivering every lane it holds or adopts to a
  :class:`~spoolkit._torture.child.RecordingSink` (one log file per process), until killed or
  told to exit.
- ``drain``: the same, but it delivers what waits, stops, says ``@done`` and exits.

As in :mod:`spoolkit._torture.child`, every event is one line on stdout, written with one
``os.write``: ``@put A B`` just before a put of numbers A..B, ``P A B`` once it returned,
``F A B <why>`` if a SpoolHandler swallowed a failure (counted in its ``errors``/``dropped``:
the record was not stored); ``@roll`` and ``@cleanup`` around chunk files, ``@open`` before a
lane is opened (taken or adopted), ``@handoff`` before a producer-only process hands its lane
over, ``@write``, ``@ack`` and ``@dead`` on the delivering side, ``@stopped clean=...`` when
the spool stopped (``clean=False``: its stop ran out of time and left batches in flight).

A line ``exit`` on stdin ends a ``writer`` or ``consumer`` normally: ``main`` returns and the
interpreter's exit hooks (``atexit``, ``logging.shutdown``) stop the spool, as in an
application that never calls ``close()``. A ``Spool`` writer keeps no reference to its spool
once its records are put (the logging module keeps the handler's): a running spool is stopped
at exit all the same.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from spoolkit import Record, RetryPolicy, Spool
from spoolkit._torture.child import (
    RecordingSink,
    _announcing,
    _install_hooks,
    announce,
    make_item,
    produce,
)
from spoolkit.backends.lanes import LanesBackend
from spoolkit.producers import SpoolHandler

__all__ = ["main", "spool_options"]


def spool_options(config: dict[str, Any]) -> dict[str, Any]:
    """The options every process of one loop opens the spool with.

    JSON (what a SpoolHandler writes), and ``max_bytes`` small enough that each lane's chunk
    files hold ``max_bytes // 8192`` records: rollover and cleanup happen all the time.
    """
    return {
        "serializer": "json",
        "max_bytes": int(config["max_bytes"]),
        "workers": int(config["workers"]),
        "batch_size": int(config["batch_size"]),
        "batch_interval": 0,
        "retry": RetryPolicy(max_attempts=5, initial_wait=0.001, max_wait=0.005, jitter=0),
    }


class _NoSink:
    """The sink of a producer-only process: never called (it delivers nothing)."""

    def write(self, batch: Sequence[Record]) -> None:
        raise AssertionError("a producer-only process delivered a batch")


class _Stops(logging.Handler):
    """Announces ``@stopped clean=True|False`` when a spool of this process stops.

    ``clean=False``: the stop ran out of time (``exit_timeout``, a handler's ``close_timeout``)
    and abandoned batches in flight, which are delivered again later, as documented.
    """

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "spoolkit", None)
        if isinstance(event, dict) and event.get("event") == "spool_stopped":
            announce(f"@stopped clean={event.get('clean')}")


def _hook_stops() -> None:
    stops = _Stops(logging.INFO)
    log = logging.getLogger("spoolkit")
    log.addHandler(stops)
    log.setLevel(logging.INFO)


def _hook_lanes() -> None:
    """Announce lane openings, handovers and acknowledgements, for every spool of this
    process (each keeps its records in a LanesBackend)."""
    lanes: Any = LanesBackend
    lanes._open_lane = _announcing("@open", LanesBackend._open_lane)
    lanes.hand_over = _announcing("@handoff", LanesBackend.hand_over)
    lanes.ack = _announcing("@ack", LanesBackend.ack)


def _hook_spool(spool: Spool) -> None:
    dead: Any = spool.dead_letters
    dead.add = _announcing("@dead", dead.add)


def _sink(config: dict[str, Any]) -> RecordingSink:
    return RecordingSink(
        config["log"],
        poison_every=config["poison_every"],
        transient_every=config["transient_every"],
    )


def _writer(config: dict[str, Any]) -> None:
    """Open the writer's spool or handler and put its records.

    Nothing is closed by hand: the process ends (exit hooks) or is killed.
    """
    consume = bool(config["consume"])
    sink: Any = _sink(config) if consume else _NoSink()
    options = dict(spool_options(config), consume=consume)
    first, count = int(config["first"]), int(config["records"])
    if config["kind"] == "handler":
        handler = SpoolHandler(config["spool"], sink=sink, spool_options=options)
        if consume:
            _hook_spool(handler.spool)
        log = logging.getLogger("torture")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        for n in range(first, first + count):
            announce(f"@put {n} {n}")
            failed = handler.errors + handler.dropped
            log.info("torture record %d", n, extra=make_item(n))
            if handler.errors + handler.dropped != failed:
                announce(f"F {n} {n} errors={handler.errors},dropped={handler.dropped}")
            else:
                announce(f"P {n} {n}")
        return
    spool = Spool(config["spool"], sink, **options)  # nothing references it once we return
    if consume:
        _hook_spool(spool)
    spool.start()
    produce(spool, first, count, int(config["seed"]))


def _consumer(config: dict[str, Any]) -> Spool:
    spool = Spool(config["spool"], _sink(config), **spool_options(config))
    _hook_spool(spool)
    spool.start()
    return spool


def _wait_for_exit() -> None:
    """Block until the parent writes a line on stdin (or closes it)."""
    sys.stdin.readline()


def main(config: dict[str, Any]) -> None:
    """Run one process of the loop (see the module docstring)."""
    _install_hooks()
    _hook_lanes()
    _hook_stops()
    role = config["role"]
    if role == "writer":
        _writer(config)
        announce("@idle")
        _wait_for_exit()
        return  # the exit hooks stop the spool (or logging.shutdown closes the handler)
    spool = _consumer(config)
    announce("@ready")
    if role == "drain":
        delivered = spool.flush(float(config["drain_timeout"]))
        spool.stop()
        announce("@done" if delivered else "@undrained")
        return
    _wait_for_exit()  # then the exit hook stops the spool, delivering for exit_timeout


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
