"""Reading chunk files back: what is intact, what is pending, what is damaged.

Used when a queue opens (to rebuild its state from the files alone) and by ``spoolkit fsck``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spoolkit._disk import framing
from spoolkit._disk.framing import CHUNK_HEADER_SIZE, Buffer, ChunkHeader, Damage, Frame


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
    """

    header: ChunkHeader | None
    pending: list[int] = field(default_factory=list)
    frames: int = 0
    acked: int = 0
    end: int = CHUNK_HEADER_SIZE
    used: int = 0
    max_id: int = -1
    damage: list[Damage] = field(default_factory=list)

    @property
    def damaged_bytes(self) -> int:
        """Bytes in damaged regions."""
        return sum(d.end - d.start for d in self.damage)


def scan_chunk(buf: Buffer, index: int, max_length: int) -> ChunkScan:
    """Scan the bytes of chunk ``index`` (a mapped file or a copy of it)."""
    header = framing.decode_chunk_header(bytes(buf[:CHUNK_HEADER_SIZE]))
    result = ChunkScan(header)
    if header is None and any(buf[:CHUNK_HEADER_SIZE]):
        result.damage.append(Damage(0, CHUNK_HEADER_SIZE))
    for found in framing.scan(buf, index, CHUNK_HEADER_SIZE, len(buf), max_length):
        if isinstance(found, Frame):
            result.frames += 1
            result.used += found.end - found.offset
            result.end = found.end
            result.max_id = max(result.max_id, found.record_id)
            if found.acked:
                result.acked += 1
            else:
                result.pending.append(found.offset)
        else:
            result.damage.append(found)
    return result
