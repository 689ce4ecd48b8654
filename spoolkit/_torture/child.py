"""The process :mod:`spoolkit.torture` kills: a Spool with producer threads and a recording sink.

Usage: ``python -m spoolkit._torture.child CONFIG_JSON`` (built by :mod:`spoolkit.torture`).

Everything it has to say goes to stdout, one short line per event, written with one
``os.write`` (atomic on a pipe), so the parent can aim its SIGKILL at a phase:

- ``@put A B`` just before ``put``/``put_many`` of numbers A..B, ``P A B`` once it returned;
- ``@write`` as the sink is called, ``@ack`` before an acknowledgement, ``@roll`` before a new
  chunk file is started, ``@cleanup`` before a chunk file is retired or removed, ``@dead``
  before records are written to the dead letters;
- ``@idle`` once every record of this run was put and delivered (the parent kills then, or
  after ``@done`` in drain mode the process exits by itself).

The sink appends one line per accepted batch to the log and fsyncs it before ``write``
returns: ``B <worker> <record id>,<n>,<pad>,<sum> ...`` (see :func:`make_item`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.backends.disk import DiskBackend
from spoolkit.errors import PartialFailure, PermanentError, TransientError
from spoolkit.queue.chunk import Chunk
from spoolkit.queue.durability import Durability
from spoolkit.queue.store import Store

__all__ = [
    "RecordingSink",
    "item_is_intact",
    "make_item",
    "produce",
    "record_field",
    "torture_item",
]

_OUT = 1  # stdout's file descriptor


def announce(line: str) -> None:
    """Tell the parent about an event: one atomic write of one line."""
    os.write(_OUT, (line + "\n").encode())


def make_item(n: int) -> dict[str, Any]:
    """The item for record number ``n``: a pad derived from ``n`` and a digest of both."""
    pad = hashlib.blake2b(str(n).encode(), digest_size=8).hexdigest() * (1 + n % 5)
    return {"n": n, "pad": pad, "sum": _digest(n, pad)}


def _digest(n: int, pad: str) -> str:
    return hashlib.blake2b(f"{n}|{pad}".encode(), digest_size=8).hexdigest()


def item_is_intact(n: int, pad: str, digest: str) -> bool:
    """True if the fields a sink saw are exactly those :func:`make_item` made for ``n``."""
    return _digest(n, pad) == digest and make_item(n)["pad"] == pad


def torture_item(item: Any) -> Any:
    """The :func:`make_item` dict inside a spooled item: the item itself, or the ``extra`` of a
    log record a :class:`~spoolkit.SpoolHandler` spooled (``logger.info(..., extra=item)``)."""
    if isinstance(item, dict) and "n" not in item and isinstance(item.get("extra"), dict):
        return item["extra"]
    return item


def record_field(record: Record) -> str:
    """How the recording sink writes one record in its log line."""
    item = torture_item(record.item)
    if not isinstance(item, dict):
        return f"{record.id},-1,{type(item).__name__},-"
    return f"{record.id},{item.get('n')},{item.get('pad')},{item.get('sum')}"


def _number(record: Record) -> int:
    item = torture_item(record.item)
    return int(item["n"]) if isinstance(item, dict) and "n" in item else -1


class RecordingSink:
    """Hands batches to ``inner`` (if any), then logs what was accepted, fsynced.

    Records whose number is a multiple of ``poison_every`` fail permanently (they end up in the
    dead letters); the first attempt of a batch whose first number is a multiple of
    ``transient_every`` fails transiently (retried).
    """

    def __init__(
        self, log: str, inner: Any = None, *, poison_every: int = 0, transient_every: int = 0
    ) -> None:
        self.fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.inner = inner
        self.poison_every = poison_every
        self.transient_every = transient_every

    def open(self) -> None:
        """Open the inner sink."""
        opener = getattr(self.inner, "open", None)
        if callable(opener):
            opener()

    def close(self) -> None:
        """Close the inner sink and the log."""
        closer = getattr(self.inner, "close", None)
        if callable(closer):
            closer()
        os.close(self.fd)

    def write(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch`` (minus poison records), log it, then fail for the poison ones."""
        announce("@write")
        every = self.transient_every
        if every and batch[0].attempts == 1 and _number(batch[0]) % every == 0:
            raise TransientError("torture: injected transient failure")
        poison = [r for r in batch if self.poison_every and _number(r) % self.poison_every == 0]
        failed: list[str] = [r.id for r in poison]
        good = [r for r in batch if r.id not in failed] if failed else list(batch)
        if good:
            error: PartialFailure | None = None
            if self.inner is not None:
                try:
                    _write(self.inner, good)
                except PartialFailure as exc:
                    refused = set(map(str, exc.failed))
                    good = [r for r in good if r.id not in refused]
                    failed += refused
                    error = exc
            self._log(good)
            if error is not None:
                raise PartialFailure(failed, cause=error)
        if failed and good:
            raise PartialFailure(failed, cause=PermanentError("torture: poison record"))
        if failed:
            raise PermanentError("torture: poison record")

    def _log(self, records: Sequence[Record]) -> None:
        if not records:
            return
        worker = threading.current_thread().name
        line = " ".join(["B", worker, *map(record_field, records)]) + "\n"
        os.write(self.fd, line.encode())
        os.fsync(self.fd)


def _write(sink: Any, batch: Sequence[Record]) -> None:
    write = getattr(sink, "write", None)
    (write if callable(write) else sink)(batch)


def _announcing(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        announce(name)
        return func(*args, **kwargs)

    return wrapper


def _install_hooks() -> None:
    """Announce chunk rollover and cleanup, for every store of this process."""
    store: Any = Store
    durability: Any = Durability
    chunk: Any = Chunk
    store._roll = _announcing("@roll", Store._roll)
    durability.unlink = _announcing("@cleanup", Durability.unlink)
    chunk.retire = _announcing("@cleanup", Chunk.retire)
    chunk.delete = _announcing("@cleanup", Chunk.delete)


def _build_sink(factory: str | None, sink_dir: str) -> Any:
    if factory is None:
        return None
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(sink_dir)


def produce(spool: Spool, first: int, count: int, seed: int) -> None:
    """Put records ``first`` to ``first + count - 1``, one by one or a few at a time (seeded),
    announcing each step (``@put``, then ``P`` once ``put`` returned)."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    n, end = first, first + count
    while n < end:
        k = min(end - n, rng.randint(2, 8) if rng.random() < 0.2 else 1)
        announce(f"@put {n} {n + k - 1}")
        if k == 1:
            spool.put(make_item(n))
        else:
            spool.put_many([make_item(i) for i in range(n, n + k)])
        announce(f"P {n} {n + k - 1}")
        n += k


def main(config: dict[str, Any]) -> None:
    """Run one cycle: put this cycle's records, deliver, then wait to be killed (or exit)."""
    _install_hooks()
    sink = RecordingSink(
        config["log"],
        _build_sink(config.get("factory"), config["sink_dir"]),
        poison_every=config["poison_every"],
        transient_every=config["transient_every"],
    )
    backend = DiskBackend(config["spool"], chunksize=config["chunksize"])
    retry = RetryPolicy(max_attempts=5, initial_wait=0.001, max_wait=0.005, jitter=0)
    spool = Spool(
        config["spool"],
        sink,
        backend=backend,
        workers=config["workers"],
        batch_size=config["batch_size"],
        batch_interval=0,
        retry=retry,
    )
    hooked: Any = backend
    hooked.ack = _announcing("@ack", backend.ack)
    dead: Any = spool.dead_letters
    dead.add = _announcing("@dead", dead.add)
    spool.start()
    producers, per = config["producers"], config["records"]
    threads = [
        threading.Thread(
            target=produce,
            args=(spool, config["first"] + p * 1_000_000, per // producers, config["seed"] + p),
        )
        for p in range(producers if per else 0)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spool.flush()
    if config["drain"]:
        spool.stop()
        announce("@done")
        return
    announce("@idle")
    threading.Event().wait()  # the parent's SIGKILL ends this process


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
