"""The default backend: one spool directory shared by any number of processes, through lanes.

Each process writes to a lane it holds (:mod:`spoolkit.queue.lanes`): its own
:class:`~spoolkit.backends.disk.DiskBackend`, so no two processes ever write one file. A
consuming process delivers its own lane and *adopts* every lane nobody holds that has records
waiting (its writer exited, was killed, or handed it over), delivers it, and lets it go once it
is empty. A producer-only process (``consume=False``) delivers nothing: while some process
consumes the spool, it hands its lane over every ``handoff_interval`` seconds (closes it, and
writes to another), so that the consumer can take it.

After ``os.fork()`` the child's copy holds no lane: its first put takes a lane of its own. The
parent's lanes are untouched by the child (see :func:`spoolkit.queue.opening.is_open_here` and
the store's fork handling).

Order: records of one process reach the sink in put order per lane (with one worker); lanes
are delivered side by side, so there is no order between processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spoolkit._internal.log import get_logger
from spoolkit.backends.disk import DiskBackend
from spoolkit.errors import ClosedError, ConfigError, FormatError, LockedError, PathError
from spoolkit.queue import locks
from spoolkit.queue.handout import Delivery
from spoolkit.queue.lanes import lane_paths, new_lane
from spoolkit.queue.meta import IDLE_MARK, LOCK, is_held_live, read_meta
from spoolkit.queue.opening import TAKEN_OVER, is_open_here, prepare_dir
from spoolkit.typing import Serializer

if TYPE_CHECKING:
    from spoolkit.backends.base import Backend

__all__ = ["LanesBackend"]

SCAN_INTERVAL = 0.5  # seconds between two looks for lanes nobody holds
IDLE = IDLE_MARK  # marks a lane let go empty (opening the directory removes it)
CONSUMERS = "consumers.lock"  # consuming processes hold a shared lock on it while they live
_OPENING = threading.Lock()  # one lane opened at a time in this process: no takeover races
_LIVE: weakref.WeakSet[LanesBackend] = weakref.WeakSet()


class LanesBackend:
    """A :class:`~spoolkit.backends.Backend` over every lane of one spool directory.

    Args:
        path: the spool directory.
        serializer: as for :class:`spoolkit.Queue`.
        fsync: as for :class:`spoolkit.Queue`.
        max_bytes: cap on the bytes on disk of each process's lane.
        chunksize: records per chunk file.
        max_deliveries: as for :class:`~spoolkit.backends.disk.DiskBackend`.
        consume: deliver this process's lane and adopt lanes nobody holds; False for a
            producer-only process, whose lanes another process delivers.
        handoff_interval: with ``consume=False``, seconds between two handovers of the lane
            this process writes (only while some process consumes the spool).

    Raises:
        ConfigError: an invalid option.
        PathError: the directory cannot be used.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: str | Serializer = "pickle",
        fsync: str = "interval",
        max_bytes: int | None = None,
        chunksize: int = 1000,
        max_deliveries: int | None = 10,
        consume: bool = True,
        handoff_interval: float = 1.0,
    ) -> None:
        if handoff_interval <= 0:
            raise ConfigError(f"handoff_interval must be > 0 seconds, got {handoff_interval!r}")
        self.root = prepare_dir(os.fspath(path))
        self.consume = consume
        self.handoff_interval = handoff_interval
        self._options: dict[str, Any] = {
            "serializer": serializer,
            "fsync": fsync,
            "max_bytes": max_bytes,
            "chunksize": chunksize,
            "max_deliveries": max_deliveries,
        }
        self._log = get_logger(path=self.root)
        self._reset()
        self._own: DiskBackend | None = self._take_own()
        self.adopt()  # what waits in lanes nobody holds counts in this spool's backlog now
        _LIVE.add(self)

    def _reset(self) -> None:
        """The state of a backend that holds no lane (a new one, or a forked child's copy)."""
        self._lock = threading.RLock()
        self._closed = False
        self._own = None
        self._adopted: list[DiskBackend] = []
        self._final: list[DiskBackend] = []  # the lanes held when closed: stats still answer
        self._by_uid: dict[str, DiskBackend] = {}  # the lanes held, by queue uid
        self._let_go = {"puts": 0, "undecodable": 0}  # the counters of lanes let go
        self._next_scan = 0.0
        self._unreadable: set[str] = set()  # lanes this process cannot read: not tried again
        self._consumer: locks.Held | None = None
        self._stop = threading.Event()
        self._handoff: threading.Thread | None = None
        self._pid = os.getpid()

    # -- lanes ---------------------------------------------------------------------------------

    def _open_lane(self, path: str) -> DiskBackend | None:
        """Open the lane at ``path`` for this process, or None if another instance holds it."""
        with _OPENING:
            if is_open_here(path):
                return None
            try:
                lane = DiskBackend(path, **self._options)
            except LockedError:
                return None
        self._by_uid[lane.uid] = lane
        return lane

    def _let_go_of(self, lane: DiskBackend) -> None:
        """Close ``lane`` (fsync, release its lock): any process may take it now.

        An empty lane is marked ``idle`` first, while its lock is still held, so that
        consumers looking for lanes to adopt need not open it to see that it is empty.
        """
        if self._by_uid.get(lane.uid) is lane:
            del self._by_uid[lane.uid]
        for key in self._let_go:
            self._let_go[key] += getattr(lane, key)
        if not lane.queue.closed and not lane.backlog():
            with contextlib.suppress(OSError):  # only a shortcut for the scans: not needed
                os.close(
                    os.open(
                        os.path.join(lane.path, IDLE),
                        os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                    )
                )
        lane.close()

    def _take_own(self) -> DiskBackend:
        """The first lane nobody holds (empty, for a producer-only process), else a new one."""
        for path in lane_paths(self.root):
            lane = self._open_lane(path)
            if lane is None:
                continue
            if self.consume or not lane.backlog():
                break
            self._let_go_of(lane)  # records wait in it: leave it to a consumer
        else:
            lane = None
            while lane is None:
                lane = self._open_lane(new_lane(self.root))
        if self.consume:
            self._hold_consumer_lock()
        elif self._handoff is None:
            self._handoff = threading.Thread(
                target=self._handoff_loop, name="spoolkit-handoff", daemon=True
            )
            self._handoff.start()
        self._log.debug("lane_taken", lane=lane.path)
        return lane

    def _current(self) -> DiskBackend:
        """This process's lane, taken now if it holds none (first put after a fork)."""
        own = self._own
        if own is None:
            with self._lock:
                if self._closed:
                    raise ClosedError(f"spool at {self.root!r} was closed")
                if self._own is None:
                    self._own = self._take_own()
                own = self._own
        return own

    def _lanes(self) -> list[DiskBackend]:
        own = self._own
        return [own, *self._adopted] if own is not None else list(self._adopted)

    def _counted(self) -> list[DiskBackend]:
        """The lanes the gauges add up: those held, or once closed those held then."""
        return self._final if self._closed else self._lanes()

    # -- consumers and producer-only handover --------------------------------------------------

    def _hold_consumer_lock(self) -> None:
        """A shared record lock on ``consumers.lock`` while this process consumes (see
        :mod:`spoolkit.queue.locks`: no forked child holds it once this process is gone)."""
        if self._consumer is None:
            self._consumer = locks.take_shared(os.path.join(self.root, CONSUMERS))

    def consumer_alive(self) -> bool:
        """Whether some process consumes this spool (holds the consumers' lock)."""
        return locks.consumer_alive(os.path.join(self.root, CONSUMERS))

    def _handoff_loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.handoff_interval):
            try:
                self.hand_over()
            except ClosedError:
                return
            except Exception as exc:  # a full or failing disk: keep writing the lane held
                self._log.warning("lane_handoff_failed", error=repr(exc))

    def hand_over(self) -> bool:
        """Producer-only: if records wait in this process's lane and some process consumes
        the spool, let the lane go (to that consumer) and write to another from now on.

        Returns:
            Whether the lane was handed over.
        """
        with self._lock:
            old = self._own
            if self._closed or old is None or not old.backlog() or not self.consumer_alive():
                return False
            self._own = self._take_own()
            self._let_go_of(old)  # puts that still hold it get ClosedError and put again
        return True

    # -- putting -------------------------------------------------------------------------------

    def _again(self, lane: DiskBackend) -> DiskBackend:
        """After ``lane`` refused a put as closed: the lane to put into instead, or raise."""
        if self._closed or self._own is lane:
            raise ClosedError(f"spool at {self.root!r} was closed")
        return self._current()

    def put(self, item: Any, *, block: bool, timeout: float | None) -> None:
        """Store ``item`` in this process's lane."""
        lane = self._own or self._current()
        try:
            lane.queue.put(item, block, timeout)
        except ClosedError:
            self._again(lane).queue.put(item, block, timeout)

    def putter(self, *, block: bool, timeout: float | None) -> Callable[[Any], None]:
        """The ``put`` of this process's lane's queue; it raises ClosedError once the lane
        changed hands (a fork, a handover): then ask again."""
        return self._current().putter(block=block, timeout=timeout)

    def put_durable(self, item: Any, *, block: bool, timeout: float | None) -> str:
        """Store ``item`` in this process's lane, fsync it, return its record id."""
        lane = self._current()
        try:
            return lane.put_durable(item, block=block, timeout=timeout)
        except ClosedError:
            return self._again(lane).put_durable(item, block=block, timeout=timeout)

    def put_many(self, items: Iterable[Any]) -> None:
        """Store every item, in order, in this process's lane."""
        items = list(items)
        lane = self._current()
        try:
            lane.put_many(items)
        except ClosedError:
            self._again(lane).put_many(items)

    def restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        """Store a dead letter again under its record id, in the lane that issued it.

        That lane is opened for the purpose if nobody holds it (and then delivered here).

        Raises:
            ConfigError: no lane of this spool issued ``record_id``.
            LockedError: the lane that issued it is held by another process.
        """
        uid = record_id.rpartition("-")[0]
        with self._lock:
            for lane in self._lanes():
                if lane.uid == uid:
                    lane.restore(payload, record_id, enqueued_at)
                    return
            for path in lane_paths(self.root):
                if _lane_uid(path) != uid:
                    continue
                opened = self._open_lane(path)
                if opened is None:
                    raise LockedError(path, None)
                self._adopted.append(opened)
                opened.restore(payload, record_id, enqueued_at)
                return
        raise ConfigError(f"record id {record_id!r} does not belong to {self.root!r}")

    # -- taking --------------------------------------------------------------------------------

    def adopt(self) -> None:
        """Adopt now every lane nobody holds that has records waiting (if consuming)."""
        self._next_scan = 0.0
        self._scan()

    def _scan(self) -> None:
        """Adopt every lane nobody holds that has records waiting (rate-limited)."""
        now = time.monotonic()
        if not self.consume or now < self._next_scan:
            return
        self._next_scan = now + SCAN_INTERVAL
        with self._lock:
            if self._closed:
                return
            self._let_go_of_drained()
            held = {lane.path for lane in self._lanes()}
            try:
                paths = lane_paths(self.root)
            except PathError as exc:  # a link planted among the lanes: adopt none until removed
                self._log.warning("lane_scan_refused", error=str(exc))
                return
            for path in paths:
                if (
                    path in held
                    or path in self._unreadable
                    or not os.path.exists(os.path.join(path, LOCK))  # being created
                    or os.path.exists(os.path.join(path, IDLE))  # let go empty: nothing to do
                    or is_held_live(path)
                ):
                    continue
                try:
                    lane = self._open_lane(path)
                except (ConfigError, FormatError) as exc:  # another serializer, a newer format
                    self._unreadable.add(path)
                    self._log.warning("lane_unreadable", lane=path, error=str(exc))
                    continue
                if lane is None:
                    continue
                if lane.backlog():
                    self._adopted.append(lane)
                    self._log.info("lane_adopted", lane=path, backlog=lane.backlog())
                else:
                    self._let_go_of(lane)

    def wait(self, timeout: float | None) -> bool:
        """Wait until a record waits in a lane this process delivers; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ClosedError(f"spool at {self.root!r} was closed")
            self._scan()
            if any(lane.waiting() for lane in self._adopted):
                return True
            lane = self._current()
            step = SCAN_INTERVAL
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            try:
                if lane.wait(step):
                    return True
            except ClosedError:
                if self._closed:
                    raise
                if lane is self._own:  # taken over by a newer instance in this process:
                    self._stop.wait(step)  # nothing of its own to wait on; adopted lanes may
                # else the lane changed hands (a fork): the next turn waits on the new one
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[Delivery]:
        """Up to ``max_items`` records of one lane: the lane whose next record is the oldest.

        Oldest first keeps a producer-only process's records in order across the lanes it
        handed over one after another (its earlier lane holds its earlier records), and shares
        the workers between lanes by age rather than by turn.
        """
        lanes = self._lanes()
        if not lanes:
            self._current()
            lanes = self._lanes()
        if len(lanes) > 1:
            lanes.sort(key=_head_age)
        for lane in lanes:
            try:
                batch = lane.get_batch(max_items, 0)
            except ClosedError:
                if self._closed:
                    raise
                continue
            if batch:
                return batch
        self._let_go_of_drained()
        if timeout and self.wait(timeout):
            return self.get_batch(max_items, 0)
        return []

    def _let_go_of_drained(self) -> None:
        if not self._adopted:
            return
        with self._lock:
            for lane in [lane for lane in self._adopted if not lane.backlog()]:
                self._adopted.remove(lane)
                self._let_go_of(lane)
                self._log.info("lane_delivered", lane=lane.path)

    def record_ids(self, messages: Sequence[Delivery]) -> list[str]:
        """``"<lane uid>-<seq>"`` of each message, as :attr:`Delivery.id`."""
        if not messages:
            return []
        uid = messages[0].queue_uid
        if any(m.queue_uid != uid for m in messages):
            return [m.id for m in messages]
        prefix = uid + "-"  # one get_batch: one lane
        return [prefix + str(m.seq) for m in messages]

    def _by_lane(self, messages: Sequence[Delivery]) -> list[tuple[DiskBackend, list[Delivery]]]:
        """``messages`` grouped by the lane held that handed them out.

        Raises:
            ClosedError: a message's lane is not held any more.
        """
        groups: dict[str, tuple[DiskBackend, list[Delivery]]] = {}
        for m in messages:
            uid = m.queue_uid
            group = groups.get(uid)
            if group is None:
                lane = self._by_uid.get(uid)
                if lane is None:
                    raise ClosedError(f"the lane of record {m.id} was closed")
                group = groups[uid] = (lane, [])
            group[1].append(m)
        return list(groups.values())

    def ack(self, *messages: Delivery) -> None:
        """Acknowledge, each message in its lane."""
        for lane, group in self._by_lane(messages):
            lane.ack(*group)

    def nack(self, *messages: Delivery) -> None:
        """Hand back, each message to its lane."""
        for lane, group in self._by_lane(messages):
            lane.nack(*group)

    def drop_oldest(self) -> bool:
        """Drop the oldest waiting record of this process's lane."""
        return self._current().drop_oldest()

    # -- state ---------------------------------------------------------------------------------

    @property
    def uid(self) -> str:
        """The uid of this process's lane."""
        return self._current().uid

    @property
    def path(self) -> str:
        """The spool directory."""
        return self.root

    @property
    def max_deliveries(self) -> int | None:
        """As for :class:`~spoolkit.backends.disk.DiskBackend`, in every lane."""
        max_deliveries: int | None = self._options["max_deliveries"]
        return max_deliveries

    @property
    def cheap_puts(self) -> bool:
        """True unless ``fsync="always"``: a put only copies into the page cache."""
        return bool(self._options["fsync"] != "always")

    def encode(self, item: Any) -> bytes:
        """Serialize ``item`` with the spool's serializer."""
        return self._current().encode(item)

    def decode(self, payload: bytes) -> Any:
        """Deserialize with the spool's serializer."""
        return self._current().decode(payload)

    def _total(self, key: str) -> int:
        held = [] if self._closed else self._lanes()  # closed lanes are counted in _let_go
        return self._let_go[key] + sum(int(getattr(lane, key)) for lane in held)

    @property
    def puts(self) -> int:
        """Records this process stored since the backend was opened (or it forked)."""
        return self._total("puts")

    @property
    def undecodable(self) -> int:
        """Records skipped because they could not be decoded."""
        return self._total("undecodable")

    def waiting(self) -> int:
        """Records waiting in the lanes this process holds."""
        return sum(lane.waiting() for lane in self._counted())

    def backlog(self) -> int:
        """Records not acknowledged yet in the lanes this process holds."""
        return sum(lane.backlog() for lane in self._counted())

    def bytes_used(self) -> int:
        """Bytes of the lanes this process holds."""
        return sum(lane.bytes_used() for lane in self._counted())

    def oldest_enqueued_at(self) -> float | None:
        """The oldest waiting record's ``enqueued_at`` over the lanes this process holds."""
        if self._closed:
            return None
        times = [t for t in (lane.oldest_enqueued_at() for lane in self._lanes()) if t is not None]
        return min(times, default=None)

    # -- what flush and stats read (see spoolkit.spool.batches.Batches.wait_settled) ---------

    lane_of = staticmethod(DiskBackend.lane_of)

    def flush_mark(self) -> None:
        """None: flush counts the records waiting by lane instead."""
        return

    def settled_through(self, mark: object) -> bool:
        """True: flush counts the records waiting by lane instead (see :meth:`flush_mark`)."""
        return True

    def waiting_by_lane(self) -> dict[str, int]:
        """Records waiting in each lane held, keyed by lane uid (a lane taken over counts 0)."""
        found: dict[str, int] = {}
        for lane in self._lanes():
            found.update(lane.waiting_by_lane())
        return found

    def closed_under(self) -> str:
        """Why a lane held was closed under this backend (a fork, its queue's own exit hook,
        a takeover), or "": a reason other than a takeover first."""
        if self._closed:
            return ""
        reasons = [r for r in (lane.closed_under() for lane in self._lanes()) if r]
        return next((r for r in reasons if r != TAKEN_OVER), reasons[0] if reasons else "")

    @property
    def lost_records(self) -> int:
        """Records found lost when the lanes held (or held at close) were opened."""
        return sum(lane.lost_records for lane in self._counted())

    def lanes_held(self) -> list[str]:
        """The lanes this process holds: its own first, then those it adopted."""
        return [lane.path for lane in self._lanes()]

    def close(self) -> None:
        """Close every lane held (fsync, release): others may take them now."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            lanes, self._own, self._adopted = self._lanes(), None, []
            self._final = lanes
        errors: list[BaseException] = []
        for lane in lanes:
            try:
                self._let_go_of(lane)
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.release()
        if errors:
            raise errors[0]

    def _after_fork_child(self) -> None:
        """The child holds no lane and no consumers' lock (the fork hooks of the stores and
        of :mod:`spoolkit.queue.locks` closed the child's copies of the files)."""
        closed = self._closed
        self._reset()
        self._closed = closed

    def __repr__(self) -> str:
        return f"<LanesBackend {self.root!r} lanes={self.lanes_held()}>"


def _head_age(lane: DiskBackend) -> float:
    """Sort key: when the lane's next record was put (an empty or closed lane sorts last)."""
    try:
        t = lane.oldest_enqueued_at()
    except ClosedError:
        t = None
    return float("inf") if t is None else t


def _lane_uid(path: str) -> str | None:
    info = read_meta(path)
    uid = info.get("uid") if info else None
    return uid if isinstance(uid, str) else None


def _after_fork_child() -> None:
    for backend in list(_LIVE):
        backend._after_fork_child()


# _OPENING is taken before the fork (this module's hook runs before opening.py's: the order
# _open_lane takes _OPENING, then the store registry's lock) so no child inherits it held
os.register_at_fork(
    before=_OPENING.acquire, after_in_parent=_OPENING.release, after_in_child=_OPENING.release
)
os.register_at_fork(after_in_child=_after_fork_child)


if TYPE_CHECKING:  # mypy checks LanesBackend against the whole contract, member by member

    def _is_a_backend(backend: LanesBackend) -> Backend[Delivery]:
        return backend
