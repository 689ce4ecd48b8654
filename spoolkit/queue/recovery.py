"""Reading chunk files back: what is intact, what is pending, what is damaged.

Used when a queue opens (to rebuild its state from the files alone) and by ``spoolkit fsck``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, Buffer, ChunkHeader, Damage, Frame


@dataclass(slots=True)
class ChunkScan:
    """The result of scanning one chunk file.

    Attributes:
        header: the chunk's header, or None when it was damaged.
        pending: offsets of intact, unacknowledged frames, in order.
        frames: how many intact frames there are.
        acked: how many of them are acknowledged.
        end: offset just past the last intact frame (where writing may resume).
        used: bytes taken by intact frames.
        max_id: the highest record id seen (-1 if none).
        damage: byte ranges that held no intact frame.
        facts: what loss detection needs of it (see :func:`find_losses`).
    """

    header: ChunkHeader | None
    pending: list[int] = field(default_factory=list)
    frames: int = 0
    acked: int = 0
    end: int = CHUNK_HEADER_SIZE
    used: int = 0
    max_id: int = -1
    damage: list[Damage] = field(default_factory=list)
    facts: FactsBuilder | None = None

    @property
    def damaged_bytes(self) -> int:
        """Bytes in damaged regions."""
        return sum(d.end - d.start for d in self.damage)


def scan_chunk(buf: Buffer, index: int, max_length: int) -> ChunkScan:
    """Scan the bytes of chunk ``index`` (a mapped file or a copy of it)."""
    header = framing.decode_chunk_header(bytes(buf[:CHUNK_HEADER_SIZE]))
    result = ChunkScan(header)
    facts = result.facts = FactsBuilder(header.first_id if header is not None else None)
    if header is None and any(buf[:CHUNK_HEADER_SIZE]):
        result.damage.append(Damage(0, CHUNK_HEADER_SIZE))
    for found in framing.scan(buf, index, CHUNK_HEADER_SIZE, len(buf), max_length):
        if isinstance(found, Frame):
            facts.frame(found.record_id, found.acked or found.deliveries > 0, found.acked)
            result.frames += 1
            result.used += found.end - found.offset
            result.end = found.end
            result.max_id = max(result.max_id, found.record_id)
            if found.acked:
                result.acked += 1
            else:
                result.pending.append(found.offset)
        else:
            facts.damage(found.start)
            result.damage.append(found)
    return result


# -- losses: record numbers that should be on disk and are not --------------------------------

PAGE = 4096  # chunk files are whole pages (see chunk._round_up): a shorter file was cut
MIN_CHUNK_FILE = 2 * PAGE  # the smallest chunk file spoolkit writes (a header and a page, rounded)


class FactsBuilder:
    """Builds a chunk's :class:`ChunkFacts` from its frames and damaged regions, met in file
    order, in one pass (an open reads millions of frames: no object per frame)."""

    __slots__ = (
        "damage_seen",
        "first_id",
        "front",
        "handed",
        "inner",
        "lowest",
        "lowest_acked",
        "top",
    )

    def __init__(self, first_id: int | None) -> None:
        self.first_id = first_id
        self.top = first_id - 1 if first_id is not None else None  # highest number so far
        self.lowest: int | None = None
        self.inner: list[tuple[int, int]] = []
        self.damage_seen = False  # damage since the last frame (the header's aside)
        self.front = False
        self.handed = True
        self.lowest_acked = False

    def frame(self, record_id: int, handed_out: bool, acked: bool) -> None:
        """An intact frame. One numbered below the highest so far is a requeued dead letter
        (it keeps its old number): it breaks no sequence. Records missing right before an
        acknowledged one were handed out before it (hand-out is in order): most likely
        delivered too, they are not counted lost."""
        self.handed = self.handed and handed_out
        top = self.top
        if top is not None and record_id <= top:
            return
        if self.lowest is None or top is None:
            self.lowest = record_id
            self.front = self.damage_seen
            self.lowest_acked = acked
        elif record_id > top + 1 and self.damage_seen and not acked:
            self.inner.append((top + 1, record_id - 1))
        self.top = record_id
        self.damage_seen = False

    def damage(self, start: int) -> None:
        """A damaged region starting at ``start`` (one inside the header does not count)."""
        if start >= CHUNK_HEADER_SIZE:
            self.damage_seen = True

    def done(self, name: str, index: int, size: int, damaged: bool) -> ChunkFacts:
        """The facts, once every frame and region was met; ``damaged``: any region at all."""
        has = self.lowest is not None
        return ChunkFacts(
            name=name,
            index=index,
            size=size,
            first_id=self.first_id,
            lowest=self.lowest,
            highest=self.top if has else None,
            inner=tuple(self.inner),
            damaged_front=self.front,
            damaged_tail=self.damage_seen,
            damaged=damaged,
            handed=self.handed,
            lowest_acked=self.lowest_acked,
        )


@dataclass(frozen=True, slots=True)
class ChunkFacts:
    """What loss detection needs of one chunk file (read by an open or by ``fsck``).

    Attributes:
        name: how reports name it (``q00003``, ``lanes/2/q00000``).
        index: its number.
        size: its size in bytes.
        first_id: the first record number its header gives it (None when the header is damaged).
        lowest: the number of its first record in sequence (None when it has none).
        highest: the highest record number in it (None when it has none).
        inner: ``(first, last)`` numbers missing between two of its records where a damaged
            region lies between them.
        damaged_front: a damaged region lies before its first record (the header aside).
        damaged_tail: a damaged region lies after its last record.
        damaged: it has a damaged region (its header's included).
        handed: every record in it was handed out or acknowledged.
        lowest_acked: its first record in sequence is acknowledged (records missing right
            before it were handed out before it: not counted lost).
    """

    name: str
    index: int
    size: int
    first_id: int | None
    lowest: int | None
    highest: int | None
    inner: tuple[tuple[int, int], ...] = ()
    damaged_front: bool = False
    damaged_tail: bool = False
    damaged: bool = False
    handed: bool = True
    lowest_acked: bool = False

    @property
    def cut(self) -> bool:
        """Whether the file is shorter than any chunk file spoolkit writes: it was cut."""
        return self.size % PAGE != 0 or self.size < MIN_CHUNK_FILE


@dataclass(frozen=True, slots=True)
class LostRange:
    """Record numbers that were written to a lane and are gone (a loss nothing else reports).

    Attributes:
        chunk: the chunk file that held them (or should have).
        first: the first lost record number; None when it cannot be known.
        last: the last one; None when every record after ``first`` may be lost (the newest
            chunk file was cut: how many records it held is not written anywhere else).
        reason: what showed the loss.
        uid: the lane's uid (the first part of the ids a user sees), if known.
    """

    chunk: str
    first: int | None
    last: int | None
    reason: str
    uid: str | None = None

    def _id(self, n: int | None) -> str | None:
        if n is None:
            return None
        return f"{self.uid}-{n}" if self.uid else str(n)

    @property
    def first_id(self) -> str | None:
        """The first lost record's id as a sink saw it (``<uid>-<n>``), if known."""
        return self._id(self.first)

    @property
    def last_id(self) -> str | None:
        """The last lost record's id (``<uid>-<n>``), if known."""
        return self._id(self.last)

    @property
    def count(self) -> int | None:
        """How many records were lost, when both ends are known."""
        if self.first is None or self.last is None:
            return None
        return self.last - self.first + 1

    def covers(self, number: int) -> bool:
        """Whether record ``number`` is in this range."""
        if self.first is not None and number < self.first:
            return False
        return self.last is None or number <= self.last

    def ids(self) -> str:
        """The range in the ids a user sees (``<uid>-<n>``), with its count."""
        if self.first is None and self.last is None:
            return "records of unknown ids"
        if self.first is None:
            return f"records up to {self.last_id}"
        if self.last is None:
            return f"records from {self.first_id} on (how many is unknown)"
        if self.first == self.last:
            return f"1 record: {self.first_id}"
        return f"{self.count:,} records: {self.first_id} to {self.last_id}"

    def describe(self) -> str:
        """One line for a log or a report: where, which ids, why."""
        return f"{self.chunk}: {self.ids()} lost ({self.reason})"


def _files(first: int, last: int) -> str:
    return f"chunk file {first} is" if first == last else f"chunk files {first} to {last} are"


def find_losses(chunks: list[ChunkFacts]) -> list[LostRange]:
    """The record numbers missing from a lane's chunk files (given in index order).

    Record numbers are issued one after another, and a chunk's header holds the first it was
    given, so on disk the records of consecutive chunk files continue each other. What breaks
    that is a loss:

    - a gap between the last record of a chunk file and the first of the next one (that file
      was cut, emptied or damaged at its end, or the next one at its start);
    - a jump between two records of one file with a damaged region between them (a jump with
      no damage is a reopening, which skips the numbers a torn write may have used);
    - a chunk file with no intact header and no record (emptied, overwritten), or with a
      header and damage (or cut short) but no record: everything up to the next file's first;
    - chunk files missing between two that are there, unless every record before them was
      handed out (then they may have been delivered, acknowledged and removed);
    - the newest chunk file cut short (chunk files are whole pages) or damaged after its last
      record: the records after that one, how many unknown.

    Not detectable from the files alone: the oldest chunk file removed whole (the same as one
    fully delivered), the newest one removed whole (the same as a full chunk before the next
    record comes), and the newest one cut exactly at a page boundary after its last record.
    """
    losses: list[LostRange] = []
    prev_end: int | None = None  # one past the highest record number so far
    prev: ChunkFacts | None = None
    handed = True  # every record so far was handed out or acknowledged
    unknown: LostRange | None = None  # a loss whose end is the next file's first record
    for pos, c in enumerate(chunks):
        newest = pos == len(chunks) - 1
        if c.lowest is None and c.first_id is not None and not c.damaged and not c.cut:
            continue  # a whole, empty chunk: emptied after delivery, or not yet written to
        start = c.first_id if c.first_id is not None else c.lowest
        if unknown is not None and start is not None:
            if unknown.first is None or start > unknown.first:
                losses.append(LostRange(unknown.chunk, unknown.first, start - 1, unknown.reason))
            unknown = None
        elif c.lowest_acked:
            pass  # what is missing before an acknowledged record was handed out before it
        elif unknown is None and start is not None and prev is not None and prev_end is not None:
            if start > prev_end and c.index == prev.index + 1:
                losses.append(
                    LostRange(
                        prev.name,
                        prev_end,
                        start - 1,
                        f"chunk {prev.index} stops short of chunk {c.index}'s first record",
                    )
                )
            elif start > prev_end and not handed:
                losses.append(
                    LostRange(
                        c.name,
                        prev_end,
                        start - 1,
                        f"{_files(prev.index + 1, c.index - 1)} missing while records before "
                        "them were never handed out",
                    )
                )
        elif start is not None and prev is None and c.first_id is None and c.damaged_front:
            losses.append(LostRange(c.name, None, start - 1, "a damaged region held them"))
        lowest, first_id = c.lowest, c.first_id
        front = c.damaged_front and not c.lowest_acked
        if lowest is not None and first_id is not None and front and lowest > first_id:
            losses.append(LostRange(c.name, first_id, lowest - 1, "a damaged region held them"))
        losses.extend(LostRange(c.name, a, b, "a damaged region held them") for a, b in c.inner)
        if c.highest is None:
            if unknown is None:
                first = c.first_id if c.first_id is not None else prev_end
                why = "emptied or overwritten" if c.first_id is None else "holds no intact record"
                unknown = LostRange(c.name, first, None, f"the chunk file {why}")
        else:
            if newest and (c.cut or c.damaged_tail):
                why = "newest chunk file cut short" if c.cut else "damaged after its last record"
                losses.append(LostRange(c.name, c.highest + 1, None, why))
            prev_end = c.highest + 1 if prev_end is None else max(prev_end, c.highest + 1)
        prev = c
        handed = handed and c.handed
    if unknown is not None:
        losses.append(unknown)
    return losses
