"""Damage on disk: flipped bytes, truncation, zero runs, garbage, broken metadata.

Opening never raises, never yields a record that was not put, and keeps every intact record.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolkit import Queue
from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, Frame


def _item(n: int) -> bytes:
    return f"record-{n:05d}-".encode() + bytes([n % 251]) * (n % 97)


def _build(path: str, n: int, acked: int, chunksize: int) -> None:
    with Queue(path, chunksize=chunksize, serializer="raw") as q:
        q.put_many([_item(i) for i in range(n)])
        q.ack(*q.get_batch(acked, timeout=0)) if acked else None


def _frames(path: str) -> dict[str, list[tuple[int, int, bytes, bool]]]:
    """Per chunk file: (start, end, payload, acked) of every frame, read before damage."""
    out = {}
    for name in sorted(os.listdir(path)):
        if not name.startswith("q"):
            continue
        data = Path(path, name).read_bytes()
        index = int(name[1:])
        frames = []
        for f in framing.scan(data, index, CHUNK_HEADER_SIZE, len(data), 1 << 20):
            assert isinstance(f, Frame)
            body = f.offset + framing.FRAME_HEADER_SIZE
            frames.append((f.offset, f.end, data[body : body + f.length], f.acked))
        out[name] = frames
    return out


damage_ops = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
        st.tuples(st.just("zero"), st.floats(0, 1), st.integers(1, 200)),
        st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
        st.tuples(st.just("garbage"), st.floats(0, 1), st.integers(1, 300)),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(1, 60),
    acked_share=st.floats(0, 1),
    chunksize=st.sampled_from([4, 16, 100]),
    ops=damage_ops,
    target=st.floats(0, 1),
)
def test_damaged_chunks_keep_every_intact_record(
    n: int, acked_share: float, chunksize: int, ops: list[tuple[str, float, int]], target: float
) -> None:
    """Any mix of flips, zero runs, truncation and garbage: intact pending records survive."""
    with tempfile.TemporaryDirectory() as path:
        _build(path, n, int(n * acked_share), chunksize)
        before = _frames(path)
        names = sorted(before)
        name = names[min(int(target * len(names)), len(names) - 1)]
        file = Path(path, name)
        data = bytearray(file.read_bytes())
        used = max((e for _s, e, _p, _a in before[name]), default=CHUNK_HEADER_SIZE)
        damaged: list[tuple[int, int]] = []
        for op, where, size in ops:
            pos = int(where * used)
            if op == "flip" and pos < len(data):
                data[pos] ^= size
                damaged.append((pos, pos + 1))
            elif op == "zero" and pos < len(data):
                end = min(pos + size, len(data))
                if any(data[pos:end]):
                    damaged.append((pos, end))
                data[pos:end] = bytes(end - pos)
            elif op == "truncate":
                del data[pos:]
                damaged.append((pos, 1 << 62))
            elif op == "garbage":
                junk = bytes((i * 37 + 11) % 256 or 1 for i in range(size))
                data[pos:pos] = junk  # inserted: every frame after it moves
                damaged.append((pos, 1 << 62))
        file.write_bytes(bytes(data))

        put = {_item(i) for i in range(n)}
        intact_pending = set()
        for fname, frames in before.items():
            for start, end, payload, acked in frames:
                hit = fname == name and any(s < end and start < e for s, e in damaged)
                if not hit and not acked:
                    intact_pending.add(payload)
        with Queue(path, chunksize=chunksize, serializer="raw") as q:
            got = [d.item for d in q.get_batch(10_000, timeout=0)]
        assert set(got) <= put, "a record that was never put came back"
        missing = intact_pending - set(got)
        assert not missing, f"{len(missing)} intact record(s) lost"


def test_records_after_a_damaged_region_in_the_same_chunk_are_recovered(tmp_path: Path) -> None:
    """Flipping a byte inside one record loses that record only, not the ones after it."""
    with Queue(tmp_path, serializer="raw") as q:
        q.put_many([_item(i) for i in range(10)])
    chunk = tmp_path / "q00000"
    data = bytearray(chunk.read_bytes())
    third = _frames(str(tmp_path))["q00000"][2]
    data[third[0] + 40] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with Queue(tmp_path, serializer="raw") as q:
        assert q.recovery.damaged_regions == 1
        got = [d.item for d in q.get_batch(100, timeout=0)]
    assert got == [_item(i) for i in range(10) if i != 2]


def test_damage_is_reported_in_a_log_warning(tmp_path: Path, caplog: object) -> None:
    """Recovery that skips damage logs a warning on the 'spoolkit' logger with the counts."""
    import logging

    with Queue(tmp_path, serializer="raw") as q:
        q.put_many([_item(i) for i in range(3)])
    chunk = tmp_path / "q00000"
    data = bytearray(chunk.read_bytes())
    data[CHUNK_HEADER_SIZE + 40] ^= 1
    chunk.write_bytes(bytes(data))
    assert isinstance(caplog, __import__("_pytest").logging.LogCaptureFixture)
    with caplog.at_level(logging.WARNING, logger="spoolkit"):
        Queue(tmp_path, serializer="raw").close()
    (rec,) = [r for r in caplog.records if "recovered_with_damage" in r.getMessage()]
    assert rec.spoolkit["damaged_regions"] == 1  # type: ignore[attr-defined]


def test_zeroed_metadata_keeps_records_and_ids(tmp_path: Path) -> None:
    """meta.json zeroed by a power cut: the queue opens, keeps its records, uid and ids."""
    with Queue(tmp_path) as q:
        q.put_many(["a", "b"])
        uid = q.uid
        ids = [d.id for d in q.get_batch(2)]
    meta = tmp_path / "meta.json"
    meta.write_bytes(b"\0" * meta.stat().st_size)
    with Queue(tmp_path) as q:
        assert q.uid == uid
        batch = q.get_batch(2)
        assert [d.item for d in batch] == ["a", "b"]
        assert [d.id for d in batch] == ids


def test_truncated_or_missing_metadata_is_rebuilt(tmp_path: Path) -> None:
    """meta.json truncated or deleted: the queue opens with its records."""
    with Queue(tmp_path) as q:
        q.put("x")
    (tmp_path / "meta.json").write_bytes(b'{"form')
    with Queue(tmp_path) as q:
        assert q.qsize() == 1
    (tmp_path / "meta.json").unlink()
    with Queue(tmp_path) as q:
        assert q.get_nowait() == "x"


def test_damaged_chunk_header_keeps_frames(tmp_path: Path) -> None:
    """A chunk whose header is destroyed still yields its intact records."""
    with Queue(tmp_path, chunksize=3) as q:
        q.put_many(range(7))
    chunk = tmp_path / "q00001"
    data = bytearray(chunk.read_bytes())
    data[0:CHUNK_HEADER_SIZE] = b"\xff" * CHUNK_HEADER_SIZE
    chunk.write_bytes(bytes(data))
    with Queue(tmp_path, chunksize=3) as q:
        assert [d.item for d in q.get_batch(10, timeout=0)] == list(range(7))


def test_empty_chunk_file_is_tolerated(tmp_path: Path) -> None:
    """A zero-length chunk file (a crash right after creating it) does not stop the open."""
    with Queue(tmp_path, chunksize=2) as q:
        q.put_many([1, 2, 3])
    (tmp_path / "q00002").write_bytes(b"")  # 1, 2 sit in q00000 and 3 in q00001
    with Queue(tmp_path, chunksize=2) as q:
        assert [d.item for d in q.get_batch(10, timeout=0)] == [1, 2, 3]
        q.put(4)
        assert q.get_nowait() == 4
