"""Record frames and chunk-file headers: layout, encoding and a damage-tolerant scanner.

A chunk file is a 64-byte header followed by frames. A frame is a 32-byte header and a payload::

    0  magic     4s   b"SPKR"
    4  length    u32  payload length
    8  id        u64  record id
    16 time      f64  enqueued_at, seconds since the epoch
    24 crc       u32  CRC-32 of bytes 4..24 then the payload, seeded with the chunk index
    28 ack       u32  0 while pending and never handed out; once handed out n times (and
                      not acknowledged), its delivery word; crc ^ ACK_MASK once acknowledged
    32 payload

The ack word sits outside the checksum so acknowledging is one 4-byte store. A damaged ack word
reads as "pending" (the record is delivered again), never as "acknowledged" by accident: it must
equal a value derived from the record's own checksum.

The delivery word counts hand-outs that were not followed by an acknowledgement, so that a
record that keeps killing its consumer is noticed after a restart: its top 24 bits are those of
``crc ^ DELIVERY_MASK`` and its low byte the count (1 to 255, saturating). They can never equal
the acknowledged value (the masks differ in their top 24 bits), and a damaged one reads as a
count of 0. A reader that knows nothing of counts (format 1 before them) sees "pending".
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

FORMAT_VERSION = 1

Buffer = bytes | bytearray | mmap.mmap

MAGIC = b"SPKR"
FRAME_HEADER = struct.Struct("<4sIQdII")
FIELDS = struct.Struct("<IQd")  # the checksummed header fields: length, id, time
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 32
ACK_OFFSET = 28
ACK_MASK = 0xACED_0A11
DELIVERY_MASK = 0x5A17_E000  # top 24 bits differ from ACK_MASK's: never reads as acked
MAX_DELIVERIES = 0xFF
U32 = struct.Struct("<I")

CHUNK_MAGIC = b"SPKC"
CHUNK_HEADER = struct.Struct("<4sHHIIQ16sd12sI")
CHUNK_HEADER_SIZE = CHUNK_HEADER.size  # 64


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """What a chunk file says about itself."""

    index: int
    capacity: int
    first_id: int
    uid: bytes
    created: float
    version: int = FORMAT_VERSION


def encode_chunk_header(h: ChunkHeader) -> bytes:
    """Encode a chunk header, its own CRC last."""
    body = CHUNK_HEADER.pack(
        CHUNK_MAGIC, h.version, CHUNK_HEADER_SIZE, h.index, h.capacity, h.first_id,
        h.uid, h.created, b"\0" * 12, 0,
    )[:-4]  # fmt: skip
    return body + U32.pack(zlib.crc32(body))


def decode_chunk_header(data: bytes) -> ChunkHeader | None:
    """Decode a chunk header, or return None when it is missing or damaged."""
    if len(data) < CHUNK_HEADER_SIZE:
        return None
    magic, version, _hlen, index, capacity, first_id, uid, created, _res, crc = (
        CHUNK_HEADER.unpack_from(data)
    )
    if magic != CHUNK_MAGIC or zlib.crc32(data[: CHUNK_HEADER_SIZE - 4]) != crc:
        return None
    return ChunkHeader(index, capacity, first_id, uid, created, version)


def encode_frame(payload: bytes, record_id: int, enqueued_at: float, seed: int) -> bytes:
    """Encode one frame (header and payload) for the chunk whose index is ``seed``."""
    fields = FIELDS.pack(len(payload), record_id, enqueued_at)
    crc = zlib.crc32(payload, zlib.crc32(fields, seed))
    return b"".join((MAGIC, fields, U32.pack(crc), b"\0\0\0\0", payload))


def ack_word(crc: int) -> bytes:
    """The 4 bytes that mark the frame with checksum ``crc`` as acknowledged."""
    return U32.pack(crc ^ ACK_MASK)


def deliveries_in(word: int, crc: int) -> int:
    """How many times a pending record was handed out, read from its ack word (0 if never).

    The queue's hand-out (``Handout.take_into``) reads and bumps the same word inline, on the
    hot path; this is the reading used by recovery, ``fsck`` and ``peek``.
    """
    return word & 0xFF if (word ^ crc ^ DELIVERY_MASK) >> 8 == 0 else 0


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid frame found by :func:`scan`."""

    offset: int
    record_id: int
    enqueued_at: float
    crc: int
    length: int
    acked: bool
    deliveries: int = 0  # hand-outs not acknowledged (see deliveries_in); 0 once acked

    @property
    def end(self) -> int:
        """Offset just past this frame."""
        return self.offset + FRAME_HEADER_SIZE + self.length


@dataclass(frozen=True, slots=True)
class Damage:
    """A run of bytes that held no valid frame, between ``start`` and ``end``."""

    start: int
    end: int


def _is_blank(buf: Buffer, start: int, end: int) -> bool:
    return not any(buf[start:end])


def scan(buf: Buffer, seed: int, start: int, end: int, max_length: int) -> Iterator[Frame | Damage]:
    """Walk the frames of a chunk from ``start`` to ``end``.

    Yields every valid frame in order, and a :class:`Damage` for each run of non-zero bytes
    that is not a valid frame (a torn write, flipped bits, appended garbage). After damage the
    scanner resynchronises on the next magic whose frame checks out, so records after a
    damaged region are kept. A run of zero bytes is preallocated space, not damage.
    """
    pos = start
    damage_from = -1
    while pos + FRAME_HEADER_SIZE <= end:
        frame = _frame_at(buf, pos, seed, end, max_length)
        if frame is not None:
            if damage_from >= 0:
                yield Damage(damage_from, pos)
                damage_from = -1
            yield frame
            pos = frame.end
            continue
        if damage_from < 0:
            if buf[pos : pos + 4] == b"\0\0\0\0" and _is_blank(buf, pos, end):
                return
            damage_from = pos
        nxt = buf.find(MAGIC, pos + 1, end)
        if nxt < 0:
            break
        pos = nxt
    if damage_from >= 0:
        tail_end = end
        # trailing zeros after the damage are preallocated space
        while tail_end > damage_from and buf[tail_end - 1] == 0:
            tail_end -= 1
        yield Damage(damage_from, tail_end)
    elif pos < end and not _is_blank(buf, pos, end):
        tail_end = end
        while tail_end > pos and buf[tail_end - 1] == 0:
            tail_end -= 1
        yield Damage(pos, tail_end)


def _frame_at(buf: Buffer, pos: int, seed: int, end: int, max_length: int) -> Frame | None:
    magic, length, record_id, enqueued_at, crc, ack = FRAME_HEADER.unpack_from(buf, pos)
    if magic != MAGIC or length > max_length:
        return None
    body = pos + FRAME_HEADER_SIZE
    if body + length > end:
        return None
    computed = zlib.crc32(buf[pos + 4 : pos + 24], seed)
    computed = zlib.crc32(buf[body : body + length], computed)
    if computed != crc:
        return None
    acked = ack == crc ^ ACK_MASK
    deliveries = 0 if acked else deliveries_in(ack, crc)
    return Frame(pos, record_id, enqueued_at, crc, length, acked, deliveries)
