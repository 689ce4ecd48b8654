"""A hypothesis state machine drives the queue against a model: put/get/ack/nack/reopen/crash."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from spoolkit import Delivery, Queue
from spoolkit.queue import opening


class QueueMachine(RuleBasedStateMachine):
    """The model: the set of records available (in put order) and those handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="spoolkit-stateful-")
        self.chunksize = 3
        self.q = Queue(self.dir, chunksize=self.chunksize, fsync="never")
        self.next = 0
        self.available: list[int] = []
        self.outstanding: dict[int, Delivery] = {}

    @rule(n=st.integers(1, 5))
    def put(self, n: int) -> None:
        """Put n records, one by one or in one put_many."""
        values = list(range(self.next, self.next + n))
        if n == 1:
            self.q.put(values[0])
        else:
            self.q.put_many(values)
        self.next += n
        self.available.extend(values)

    @rule(n=st.integers(1, 6))
    def get_batch(self, n: int) -> None:
        """get_batch hands out the oldest available records (redeliveries first)."""
        expected = sorted(self.available)[:n]
        got = self.q.get_batch(n, timeout=0)
        assert [d.item for d in got] == expected
        for d in got:
            self.available.remove(d.item)
            self.outstanding[d.item] = d

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        """Acknowledged records are gone for good."""
        keys = data.draw(st.lists(st.sampled_from(sorted(self.outstanding)), unique=True))
        self.q.ack(*(self.outstanding.pop(k) for k in keys))

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        """Nacked records become available again."""
        keys = data.draw(st.lists(st.sampled_from(sorted(self.outstanding)), unique=True))
        self.q.nack(*(self.outstanding.pop(k) for k in keys))
        self.available.extend(keys)

    def _reopen(self) -> None:
        self.q = Queue(self.dir, chunksize=self.chunksize, fsync="never")
        self.available.extend(self.outstanding)
        self.outstanding.clear()

    @rule()
    def reopen(self) -> None:
        """A clean close and reopen: what was handed out and not acked is available again."""
        self.q.close()
        self._reopen()

    @rule()
    def crash(self) -> None:
        """A crash: the files are dropped without any sync or clean-up."""
        store = self.q._store
        store.closed = True
        store.durability.stop()
        with store.lock:
            store._close_files()
        opening.unregister(store)
        self._reopen()

    @invariant()
    def sizes_match(self) -> None:
        """qsize and unfinished_tasks always match the model."""
        assert self.q.qsize() == len(self.available)
        assert self.q.unfinished_tasks == len(self.available) + len(self.outstanding)

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestQueueStateful = QueueMachine.TestCase
