"""Group commit: concurrent callers share flushes, and a leader waits for the last group."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from spoolkit.queue import groupcommit
from spoolkit.queue.groupcommit import GroupCommit
from spoolkit.testing import FakeClock


class Disk:
    """Writes numbered by a generation counter, and a flush that covers what was written.

    ``hold`` keeps the flush running until released; ``flushes`` lists the generation
    each flush covered; every flush advances ``clock`` by ``took`` seconds.
    """

    def __init__(self, clock: FakeClock, took: float = 1.0) -> None:
        self.gen = 0
        self.lock = threading.Lock()
        self.flushes: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.in_flush = threading.Event()
        self.fail_next = False
        self.clock = clock
        self.took = took

    def write(self) -> int:
        with self.lock:
            self.gen += 1
            return self.gen

    def flush(self) -> int:
        covered = self.gen
        self.in_flush.set()
        assert self.hold.wait(30), "the test never released the flush"
        self.clock.advance(self.took)
        if self.fail_next:
            self.fail_next = False
            raise OSError(5, "EIO")
        self.flushes.append(covered)
        return covered


def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds (threads reach a state), failing after 10 s."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def caller(gc: GroupCommit, disk: Disk, errors: list[BaseException]) -> threading.Thread:
    def work() -> None:
        try:
            gc.run(disk.write(), disk.flush)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    return t


def during_a_flush(
    gc: GroupCommit, disk: Disk, errors: list[BaseException], n: int, *, fail: bool = False
) -> None:
    """One caller's flush is held while ``n`` more callers come in and wait; then it ends
    (raising if ``fail``), and every caller returns."""
    disk.hold.clear()
    disk.in_flush.clear()
    first = caller(gc, disk, errors)
    assert disk.in_flush.wait(10)
    disk.in_flush.clear()
    rest = [caller(gc, disk, errors) for _ in range(n)]
    until(lambda: gc._inside == n, f"{n} callers wait")
    disk.fail_next = fail
    disk.hold.set()
    for t in [first, *rest]:
        t.join(10)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_lone_caller_flushes_at_once_every_time(clock: FakeClock) -> None:
    """One caller after another: each runs its own flush, and none waits for company."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock)
    for _ in range(3):
        gen = disk.write()
        gc.run(gen, disk.flush)
        assert disk.flushes[-1] == gen
    assert disk.flushes == [1, 2, 3]
    assert gc._group == 1  # a lone caller never sets the leader waiting


def test_callers_arriving_during_a_flush_share_the_next_one(clock: FakeClock) -> None:
    """Five callers that come while a flush runs are all covered by one more flush."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock)
    errors: list[BaseException] = []
    during_a_flush(gc, disk, errors, 5)
    assert not errors
    assert disk.flushes == [1, 6]


def test_the_leader_waits_for_as_many_callers_as_the_last_flush_covered(
    clock: FakeClock,
) -> None:
    """After a flush that covered three callers, the next leader waits for two more to come
    in, and one flush covers all three; a lone leader would have flushed by itself."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock, took=10.0)  # patience: half of it, 5 s, more than the callers need
    errors: list[BaseException] = []
    during_a_flush(gc, disk, errors, 3)
    assert disk.flushes == [1, 4]
    assert gc._group == 3

    leader = caller(gc, disk, errors)
    until(lambda: gc._leader_waiting, "the leader waits for its group")
    assert disk.flushes == [1, 4]  # not flushed alone
    others = [caller(gc, disk, errors) for _ in range(2)]
    for t in [leader, *others]:
        t.join(10)
    assert not errors
    assert disk.flushes == [1, 4, 7]


def test_the_leader_gives_up_waiting_after_its_patience(clock: FakeClock) -> None:
    """When the last group's callers do not come back, the leader flushes alone after half
    the last flush's duration, and the next leader does not wait at all."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock, took=0.1)  # patience: 0.05 s
    errors: list[BaseException] = []
    during_a_flush(gc, disk, errors, 2)
    assert gc._group == 2

    gc.run(disk.write(), disk.flush)  # alone: waits out 0.05 s, then flushes
    assert disk.flushes[-1] == disk.gen
    assert gc._group == 1
    gc.run(disk.write(), disk.flush)
    assert disk.flushes[-1] == disk.gen
    assert not errors


def test_a_failed_flush_raises_for_its_leader_and_the_others_flush_again(
    clock: FakeClock,
) -> None:
    """The leader whose flush fails gets the error; callers waiting for it are not released
    as covered: one of them flushes again."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock)
    errors: list[BaseException] = []
    during_a_flush(gc, disk, errors, 1, fail=True)
    assert [type(e) for e in errors] == [OSError]
    assert disk.flushes == [2]  # the waiter's own flush, after the failed one


def test_a_caller_the_running_flush_covers_returns_with_it_and_leads_nothing(
    clock: FakeClock,
) -> None:
    """A caller whose write the running flush already covers waits for that flush, returns
    when it ends without a flush of its own, and does not count in the next group."""
    gc = GroupCommit(max_patience=60, clock=clock.monotonic)
    disk = Disk(clock)
    early, late = disk.write(), disk.write()  # both written before the flush starts
    disk.hold.clear()
    leader = threading.Thread(target=gc.run, args=(early, disk.flush))
    leader.start()
    assert disk.in_flush.wait(10)
    waiter = threading.Thread(target=gc.run, args=(late, disk.flush))
    waiter.start()
    until(lambda: len(gc._waiters) == 1, "the second caller waits")
    disk.hold.set()
    for t in (leader, waiter):
        t.join(10)
    assert disk.flushes == [2]  # one flush covered both
    assert gc._inside == 0
    assert not gc._flushing


def test_callers_a_flush_does_not_cover_keep_waiting_and_the_first_leads_next(
    clock: FakeClock,
) -> None:
    """When a flush ends, the callers that came in during it are not released: the first is
    woken to lead the next flush, and the others wait (queued, not returned) until it ends."""
    gc = GroupCommit(max_patience=0, clock=clock.monotonic)  # no gathering: flush at once
    disk = Disk(clock)
    disk.hold.clear()
    first = threading.Thread(target=gc.run, args=(disk.write(), disk.flush))
    first.start()
    assert disk.in_flush.wait(10)
    disk.in_flush.clear()
    returned: list[int] = []
    started, go = threading.Event(), threading.Event()

    def second_flush() -> int:  # what the waiters pass: held until the test lets it go
        started.set()
        assert go.wait(10)
        return disk.flush()

    def wait_for(gen: int) -> None:
        gc.run(gen, second_flush)
        returned.append(gen)

    rest = [threading.Thread(target=wait_for, args=(disk.write(),)) for _ in range(3)]
    for t in rest:
        t.start()
    until(lambda: len(gc._waiters) == 3, "three callers wait")
    disk.hold.set()
    first.join(10)
    assert started.wait(10), "a waiter leads the next flush"
    assert returned == []
    assert len(gc._waiters) == 2
    go.set()
    for t in rest:
        t.join(10)
    assert disk.flushes == [1, 4]
    assert sorted(returned) == [2, 3, 4]


class _InterruptedLock:
    """A waiter's lock whose blocking wait raises once released (as a signal handler would
    interrupt it), after the leader already handed it the flush or covered it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        if self._lock.acquire(blocking=False):
            return True  # the waiter takes its own lock at once
        assert self._lock.acquire(timeout=10)
        raise KeyboardInterrupt

    def release(self) -> None:
        self._lock.release()


def test_a_waiter_interrupted_after_being_made_leader_passes_the_flush_on(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next leader, interrupted as it wakes, hands the flush to the caller behind it,
    which flushes and returns: nobody is left waiting for a flush no one runs."""
    gc = GroupCommit(max_patience=0, clock=clock.monotonic)
    disk = Disk(clock)
    errors: list[BaseException] = []
    disk.hold.clear()
    first = caller(gc, disk, errors)
    assert disk.in_flush.wait(10)
    monkeypatch.setattr(groupcommit, "_new_lock", _InterruptedLock)
    interrupted = caller(gc, disk, errors)
    until(lambda: len(gc._waiters) == 1, "the interrupted caller waits")
    monkeypatch.undo()
    behind = caller(gc, disk, errors)
    until(lambda: len(gc._waiters) == 2, "a second caller waits")
    disk.hold.set()
    for t in (first, interrupted, behind):
        t.join(10)
    assert [type(e) for e in errors] == [KeyboardInterrupt]
    assert disk.flushes == [1, 3]
    assert not gc._flushing


def test_under_load_no_caller_returns_before_a_flush_covered_it() -> None:
    """8 threads, 300 calls each, some flushes failing: every call that returns normally
    returns after a finished flush covered its write, and every failed call saw a failure."""
    gc = GroupCommit(max_patience=0.0005)
    lock = threading.Lock()
    state = {"gen": 0, "durable": 0, "flushes": 0}
    violations: list[tuple[int, int]] = []
    failed: list[int] = []

    def flush() -> int:
        with lock:
            target = state["gen"]
            state["flushes"] += 1
            fail = state["flushes"] % 37 == 0
        time.sleep(0.0001)  # the "fsync", during which others write and queue up
        if fail:
            raise OSError(5, "EIO")
        with lock:
            state["durable"] = max(state["durable"], target)
        return target

    def worker() -> None:
        for _ in range(300):
            with lock:
                state["gen"] += 1
                gen = state["gen"]
            try:
                gc.run(gen, flush)
            except OSError:
                failed.append(gen)
                continue
            with lock:
                if state["durable"] < gen:
                    violations.append((gen, state["durable"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller was left waiting"
    assert violations == []
    assert state["flushes"] < 8 * 300  # flushes were shared
    assert len(failed) == state["flushes"] // 37  # each failure reached exactly its leader
    assert not gc._flushing
    assert gc._waiters == []
