"""``spoolkit dead requeue|purge`` on a spool whose lanes other processes may hold.

The dead letters of every lane share ``<spool>/dead`` (opened per operation, waited for up to
30 s, like every process of the spool does). A dead letter goes back into the lane that issued
its record id (``<lane uid>-<number>``), under that id: this opens the lane (takes its lock)
for the command's duration, so a letter whose lane a live process holds is left where it is
and counted in :attr:`Requeue.held`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from spoolkit.backends.disk import DiskBackend
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ConfigError
from spoolkit.tools import inspect as insp
from spoolkit.typing import Serializer

__all__ = ["Requeue"]


class Requeue:
    """The dead letters of the spool at ``root``, to requeue into their lanes or purge.

    Args:
        root: the spool directory.
        serializer: what the lanes were written with (to open them); None to purge only.
    """

    def __init__(self, root: str, serializer: str | Serializer | None) -> None:
        self.root = root
        self.serializer = serializer
        self.held: dict[int, tuple[int | None, int]] = {}
        """Letters left because a live process holds their lane: lane -> (pid, letters)."""
        self.foreign = 0
        """Letters left because no lane of this spool issued their record id."""
        self._opened: dict[str, DiskBackend] = {}
        self._by_uid: dict[str, insp.LaneInfo] = {}

    def _store(self) -> DeadLetters:
        return DeadLetters(os.path.join(self.root, insp.DEAD_DIR), bytes, self._restore)

    def purge(self, ids: Sequence[str] | None) -> tuple[int, int]:
        """Delete the dead letters ``ids`` (all when None); returns (deleted, left)."""
        store = self._store()
        return store.purge(ids), len(store)

    def requeue(self, ids: Sequence[str] | None) -> tuple[int, int]:
        """Requeue the dead letters ``ids`` (all when None) whose lane nobody holds.

        Returns:
            (requeued, letters left in the store).
        """
        self._by_uid = {lane.uid: lane for lane in insp.lanes(self.root) if lane.uid}
        wanted = None if ids is None else set(ids)
        chosen: list[str] = []
        for letter in insp.dead_letters(self.root, decode=False):
            if wanted is not None and letter.id not in wanted:
                continue
            lane = self._by_uid.get(letter.id.rpartition("-")[0])
            if lane is None:
                self.foreign += 1
            elif lane.locked:
                pid, count = self.held.get(lane.number, (lane.holder_pid, 0))
                self.held[lane.number] = (pid, count + 1)
            else:
                chosen.append(letter.id)
        store = self._store()
        done = store.requeue(chosen) if chosen else 0
        return done, len(store)

    def _restore(self, payload: bytes, record_id: str, enqueued_at: float) -> None:
        lane = self._by_uid.get(record_id.rpartition("-")[0])
        if lane is None:
            raise ConfigError(f"record id {record_id!r} was issued by no lane of {self.root!r}")
        opened = self._opened.get(lane.path)
        if opened is None:
            assert self.serializer is not None
            opened = DiskBackend(lane.path, serializer=self.serializer)
            self._opened[lane.path] = opened
        opened.restore(payload, record_id, enqueued_at)

    def close(self) -> None:
        """Close the lanes opened (fsync, release their locks)."""
        opened, self._opened = list(self._opened.values()), {}
        for lane in opened:
            lane.close()

    def __enter__(self) -> Requeue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
