"""A backend written from the contract's docstring alone (spoolkit/backends/base.py) runs a
Spool: the spool uses nothing but the contract, and decides dead-lettering itself."""

from __future__ import annotations

import functools
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoolkit import Spool
from spoolkit.backends import Backend, Undecodable
from spoolkit.errors import ClosedError, ConfigError, PermanentError
from spoolkit.testing import FlakySink, MemorySink


@dataclass
class Msg:
    """A message: the contract's three fields, and what this backend needs to ack it."""

    seq: int
    payload: bytes
    item: Any
    enqueued_at: float
    deliveries: int


class MemoryBackend:
    """An in-memory store with one lane, as the contract's docstring describes the smallest
    honest one (not durable: for this test only)."""

    def __init__(self, max_deliveries: int | None = 3) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[tuple[int, bytes, float, int]] = deque()  # seq, payload, t, n
        self._out: dict[int, tuple[bytes, float, int]] = {}
        self._next = 1
        self._closed = False
        self._max = max_deliveries
        self.puts_seen = 0
        self.decode_failures = 0

    uid = "mem"
    path = None
    cheap_puts = True
    lost_records = 0

    @property
    def max_deliveries(self) -> int | None:
        return self._max

    @property
    def puts(self) -> int:
        return self.puts_seen

    @property
    def undecodable(self) -> int:
        return self.decode_failures

    def encode(self, item: Any) -> bytes:
        return pickle.dumps(item)

    def decode(self, payload: bytes) -> Any:
        return pickle.loads(payload)

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("closed")

    def _store(self, payload: bytes, t: float, seq: int | None = None) -> int:
        with self._cond:
            self._check()
            if seq is None:
                seq, self._next = self._next, self._next + 1
                self.puts_seen += 1
            self._waiting.append((seq, payload, t, 0))
            self._cond.notify_all()
            return seq

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        self._store(self.encode(item), time.time())

    def putter(self, *, block: bool, timeout: float | None) -> Callable[[Any], None]:
        return functools.partial(self.put, block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        return f"mem-{self._store(self.encode(item), time.time())}"

    def put_many(self, items: Iterable[Any]) -> None:
        for payload in [self.encode(i) for i in items]:
            self._store(payload, time.time())

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        uid, _, seq = record_id.rpartition("-")
        if uid != self.uid:
            raise ConfigError(f"{record_id!r} is not a record of this store")
        self._store(payload, enqueued_at, int(seq))

    def wait(self, timeout: float | None) -> bool:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._closed or self._waiting, timeout)
            self._check()
            return bool(ok)

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[Msg]:
        if not self.wait(timeout):
            return []
        out = []
        with self._cond:
            while self._waiting and len(out) < max_items:
                seq, payload, t, n = self._waiting.popleft()
                self._out[seq] = (payload, t, n + 1)
                try:
                    item = self.decode(payload)
                except Exception as exc:
                    self.decode_failures += 1
                    item = Undecodable({"payload": payload}, exc)
                out.append(Msg(seq, payload, item, t, n + 1))
        return out

    def record_ids(self, messages: Sequence[Msg]) -> list[str]:
        return [f"mem-{m.seq}" for m in messages]

    def ack(self, *messages: Msg) -> None:
        with self._cond:
            for m in messages:
                self._out.pop(m.seq, None)

    def nack(self, *messages: Msg) -> None:
        with self._cond:
            for m in reversed(messages):
                payload, t, n = self._out.pop(m.seq)
                self._waiting.appendleft((m.seq, payload, t, n))
            self._cond.notify_all()

    def drop_oldest(self) -> bool:
        with self._cond:
            return bool(self._waiting) and self._waiting.popleft() is not None

    def waiting_by_lane(self) -> dict[str, int] | None:
        return {"": self.waiting()}

    def lane_of(self, message: Msg) -> str:
        return ""

    def flush_mark(self) -> object | None:
        return None

    def settled_through(self, mark: object) -> bool:
        return True

    def waiting(self) -> int:
        return len(self._waiting)

    def backlog(self) -> int:
        return len(self._waiting) + len(self._out)

    def bytes_used(self) -> int:
        return 0

    def oldest_enqueued_at(self) -> float | None:
        with self._cond:
            return self._waiting[0][2] if self._waiting else None

    def lanes_held(self) -> list[str]:
        return []

    def hand_over(self) -> bool:
        return False

    def closed_under(self) -> str:
        return ""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def test_the_memory_backend_is_a_backend() -> None:
    """It declares every member of the contract (the Protocol's runtime check)."""
    backend: Backend[Msg] = MemoryBackend()
    assert isinstance(backend, Backend)


def test_a_spool_delivers_flushes_and_counts_through_it(tmp_path: Path) -> None:
    """put, put_many and a deferred call reach the sink; flush waits for them; stats add up
    from the backend's counters."""
    sink = MemorySink()
    backend = MemoryBackend()
    with Spool(tmp_path, sink, backend=backend, workers=2, batch_size=7) as spool:
        spool.put_many(range(50))
        for i in range(50, 60):
            spool.put(i)
        assert spool.flush(10)
        stats = spool.stats()
    assert sorted(r.item for b in sink.batches for r in b) == list(range(60))
    assert stats.enqueued == stats.delivered == 60
    assert stats.backlog == 0
    assert backend.backlog() == 0


def test_the_spool_retries_and_dead_letters_through_it(tmp_path: Path) -> None:
    """A failing batch is retried by the spool; a refused one lands in its dead letters and
    is requeued through the backend's restore, keeping its id."""
    flaky = FlakySink(pattern=[True, PermanentError("no")])
    with Spool(tmp_path, flaky, backend=MemoryBackend(), batch_size=1) as spool:
        spool.put("x")
        assert spool.flush(10)
        (letter,) = spool.dead_letters.list()
        assert letter.record.item == "x"
        assert spool.dead_letters.requeue() == 1
        assert spool.flush(10)
    ids = [r.id for b in flaky.inner.batches for r in b]
    assert ids == [letter.record.id]


def test_the_spool_screens_poison_records_from_it(tmp_path: Path) -> None:
    """A record handed out more than max_deliveries times and one that cannot be decoded
    are dead-lettered by the spool, never given to the sink; the rest is delivered."""
    backend = MemoryBackend(max_deliveries=2)
    backend.put("tired", block=True, timeout=None)
    for _ in range(2):  # two consumers died holding it
        backend.nack(*backend.get_batch(1, 0))
    backend._store(b"not a pickle", time.time())
    backend.put("fine", block=True, timeout=None)
    sink = MemorySink()
    with Spool(tmp_path, sink, backend=backend) as spool:
        assert spool.flush(10)
        letters = {d.record.id: d for d in spool.dead_letters.list()}
        stats = spool.stats()
    assert [r.item for b in sink.batches for r in b] == ["fine"]
    assert sorted(letters) == ["mem-1", "mem-2"]
    assert "more than max_deliveries=2" in letters["mem-1"].error.message
    assert letters["mem-2"].error.type.endswith("UnpicklingError")
    assert stats.dead_lettered == 2
    assert stats.undecodable == 1
