"""Damage fuzzing beyond ``test_queue_damage.py``: fsck's report, meta.json, dead letters.

A frame is **intact** when none of its bytes changed except, possibly, its 4-byte ack word
(outside the checksum: a damaged ack word makes an acknowledged record pending again, which
at-least-once allows). Properties, for in-place flips, zero runs and garbage overwrites, plus
truncation and appended garbage:

- ``fsck`` (and ``spoolkit fsck --json``) reports every intact frame as intact, reports no damaged
  region overlapping an intact frame, and covers every changed non-zero byte outside intact
  frames with a damaged region; every damaged region touches a changed byte or a frame that
  lost bytes.
- Opening never raises (a ``meta.json`` whose ``format`` became a newer version is refused with
  the documented ``FormatError``), never yields a record that was not put, keeps every intact
  pending record, and keeps the spool's uid while a chunk header is intact.
- The dead-letter store (``dead/q00000``, ``dead/meta.json``) obeys the same rules.
- Losses (issue 21): a chunk cut at a record boundary, emptied to 0 bytes, deleted, flipped, or a
  ``meta.json`` of the wrong shape: every pending record that does not come back is in a range
  both ``fsck`` and the open report (but the documented undetectable cases: the oldest or newest
  chunk file deleted whole, or one deleted after every record before it was handed out, the
  newest cut at a page boundary); the open raises nothing but a spoolkit error, and only where
  ``fsck`` refuses too; untouched chunk files report no loss. 1,000 trials in the slow suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolkit import Queue
from spoolkit.cli import cli
from spoolkit.deadletter import DeadEntry, DeadError, DeadLetters
from spoolkit.errors import FormatError
from spoolkit.queue import framing
from spoolkit.queue.framing import ACK_OFFSET, CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, Frame
from spoolkit.tools.inspect import fsck

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Frames = dict[str, list[Frame]]


def _item(n: int) -> bytes:
    return f"record-{n:05d}-".encode() + bytes([n % 251 or 1]) * (n % 97)


def _frames(directory: str, prefix: str = "") -> Frames:
    out: Frames = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith("q"):
            data = Path(directory, name).read_bytes()
            found = framing.scan(data, int(name[1:]), CHUNK_HEADER_SIZE, len(data), 1 << 30)
            out[prefix + name] = [f for f in found if isinstance(f, Frame)]
    return out


def _payload(data: bytes, f: Frame) -> bytes:
    body = f.offset + FRAME_HEADER_SIZE
    return data[body : body + f.length]


# in-place damage keeps offsets, so the damaged bytes are exactly the changed ones
in_place = st.lists(
    st.tuples(st.sampled_from(["flip", "zero", "garbage"]), st.floats(0, 1), st.integers(1, 120)),
    min_size=1,
    max_size=4,
)
ends = st.sampled_from(["keep", "truncate", "append"])


def chunk_damage(max_records: int, chunksizes: list[int]) -> dict[str, st.SearchStrategy[Any]]:
    """The cases of the chunk-damage property: records put and acked, which chunk, what damage."""
    return {
        "n": st.integers(1, max_records),
        "acked": st.floats(0, 1),
        "chunksize": st.sampled_from(chunksizes),
        "target": st.floats(0, 1),
        "ops": in_place,
        "end_op": ends,
        "where": st.floats(0, 1),
    }


def _damage(
    data: bytes, ops: list[tuple[str, float, int]], end_op: str, where: float, used: int
) -> tuple[bytes, set[int], int]:
    """Damaged bytes, the changed offsets, and the offset from which the file was cut (or len)."""
    buf = bytearray(data)
    for op, at, size in ops:
        pos = int(at * used)
        stop = min(pos + size, len(buf))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= size % 255 + 1
        elif op == "zero":
            buf[pos:stop] = bytes(stop - pos)
        elif op == "garbage":
            buf[pos:stop] = bytes((i * 37 + size) % 255 + 1 for i in range(stop - pos))
    cut = len(buf)
    if end_op == "truncate":
        cut = int(where * used)
        del buf[cut:]
    elif end_op == "append":
        # garbage right after the last frame, where the next write would go
        junk = bytes((i * 53 + 7) % 255 + 1 for i in range(int(where * 300) + 1))
        buf[used : used + len(junk)] = junk
    changed = {i for i in range(min(len(buf), len(data))) if buf[i] != data[i]}
    return bytes(buf), changed, cut


def _touched(f: Frame, changed: set[int], cut: int) -> bool:
    if f.end > cut:
        return True
    ack = range(f.offset + ACK_OFFSET, f.offset + FRAME_HEADER_SIZE)
    return any(p in changed and p not in ack for p in range(f.offset, f.end))


def _check_fsck(  # noqa: PLR0917 - the one damaged chunk, described
    spool: str, name: str, after: bytes, frames: list[Frame], changed: set[int], cut: int
) -> None:
    """fsck's findings for chunk ``name`` are exactly the damage, by the rules above."""
    report = fsck(spool)
    (chunk,) = [c for c in report.chunks if c.name == name]
    intact = [f for f in frames if not _touched(f, changed, cut)]
    lost = [f for f in frames if _touched(f, changed, cut)]
    regions = [(d.start, d.end) for d in chunk.damage]
    assert chunk.frames >= len(intact)
    for f in intact:
        assert not any(s < f.end and f.offset < e for s, e in regions), "intact frame reported"
    inside_intact = {p for f in intact for p in range(f.offset, f.end)}
    for p in changed:
        if p < len(after) and after[p] and p not in inside_intact:
            assert any(s <= p < e for s, e in regions), f"damaged byte {p} not reported"
    for s, e in regions:
        header_hit = s == 0 and (cut < CHUNK_HEADER_SIZE or min(changed, default=cut) < 64)
        hit = header_hit or any(s <= p < e for p in changed)
        hit = hit or any(s < f.end and f.offset < e for f in lost)
        assert hit, f"region {s}..{e} holds no damage"
    out = CliRunner().invoke(cli, ["fsck", "--json", spool])
    doc = json.loads(out.output)
    assert out.exit_code == (0 if report.ok else 1)
    assert doc["ok"] == report.ok
    found = [
        (d["start"], d["end"]) for d in doc["damage"] if d["chunk"] == name and "lost" not in d
    ]
    assert found == regions


@FUZZ
@given(**chunk_damage(max_records=40, chunksizes=[4, 16, 100]))
def test_fsck_reports_exactly_the_damaged_regions_and_open_keeps_intact_records(
    *, n: int, acked: float, chunksize: int, target: float, ops: list[tuple[str, float, int]],
    end_op: str, where: float,
) -> None:  # fmt: skip
    """Damage one chunk: fsck reports exactly it; open keeps every intact pending record."""
    with tempfile.TemporaryDirectory() as path:
        with Queue(path, chunksize=chunksize, serializer="raw", fsync="never") as q:
            q.put_many([_item(i) for i in range(n)])
            q.ack(*q.get_batch(int(n * acked), timeout=0)) if int(n * acked) else None
            uid = q.uid
        before = _frames(path)
        names = sorted(before)
        name = names[min(int(target * len(names)), len(names) - 1)]
        file = Path(path, name)
        data = file.read_bytes()
        used = max((f.end for f in before[name]), default=CHUNK_HEADER_SIZE)
        after, changed, cut = _damage(data, ops, end_op, where, used)
        file.write_bytes(after)

        _check_fsck(path, name, after, before[name], changed, cut)

        keep: dict[bytes, int] = {}
        for fname, frames in before.items():
            raw = Path(path, fname).read_bytes() if fname != name else data
            for f in frames:
                if not f.acked and (fname != name or not _touched(f, changed, cut)):
                    keep[_payload(raw, f)] = f.record_id
        header_ok = any(
            framing.decode_chunk_header(Path(path, c).read_bytes()[:CHUNK_HEADER_SIZE])
            for c in names
        )
        with Queue(path, chunksize=chunksize, serializer="raw") as q:
            got = {d.item: getattr(d, "seq", d.id) for d in q.get_batch(1 << 20, timeout=0)}
            assert q.uid == uid or not header_ok
        assert set(got) <= {_item(i) for i in range(n)}, "a record that was never put came back"
        assert keep.items() <= got.items(), "an intact record was lost or changed its id"


meta_damage = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("zero"), st.just(0.0), st.just(0)),
    st.tuples(st.just("append"), st.just(1.0), st.integers(1, 40)),
    st.tuples(st.just("delete"), st.just(0.0), st.just(0)),
)


@FUZZ
@given(n=st.integers(0, 20), damage=meta_damage)
def test_damaged_metadata_keeps_records_ids_and_uid(n: int, damage: tuple[str, float, int]) -> None:
    """Any damage to meta.json: open keeps every pending record, its id and the spool's uid."""
    with tempfile.TemporaryDirectory() as path:
        with Queue(path, chunksize=8, serializer="raw", fsync="never") as q:
            q.put_many([_item(i) for i in range(n)])
            ids = [getattr(d, "seq", d.id) for d in q.get_batch(n, timeout=0)] if n else []
            uid = q.uid
        meta = Path(path, "meta.json")
        data = bytearray(meta.read_bytes())
        op, at, size = damage
        pos = min(int(at * len(data)), len(data) - 1)
        if op == "flip":
            data[pos] ^= size
        elif op == "truncate":
            del data[pos:]
        elif op == "zero":
            data[:] = bytes(len(data))
        elif op == "append":
            data += bytes((i * 31 + 5) % 256 for i in range(size))
        if op == "delete":
            meta.unlink()
        else:
            meta.write_bytes(bytes(data))
        try:
            parsed = json.loads(bytes(data))
        except ValueError:
            parsed = None
        newer = isinstance(parsed, dict) and isinstance(parsed.get("format"), int)
        newer = newer and parsed["format"] > framing.FORMAT_VERSION  # type: ignore[index]
        if newer:  # documented: a newer format is refused, never misread
            with pytest.raises(FormatError):
                Queue(path, chunksize=8, serializer="raw")
            return
        with Queue(path, chunksize=8, serializer="raw") as q:
            batch = q.get_batch(1 << 20, timeout=0)
            assert q.uid == uid
        assert [d.item for d in batch] == [_item(i) for i in range(n)]
        assert [getattr(d, "seq", d.id) for d in batch] == ids


def _entry(i: int) -> DeadEntry:
    error = DeadError("spoolkit.errors.PermanentError", f"refused {i}", "")
    return DeadEntry(f"{'ab' * 16}-{i}", _item(i), 1.0 + i, error, 1 + i % 3, 2.0, 3.0)


@FUZZ
@given(
    n=st.integers(1, 30),
    ops=in_place,
    end_op=ends,
    where=st.floats(0, 1),
    meta_too=st.booleans(),
)
def test_damaged_dead_letters_keep_every_intact_entry(
    n: int, ops: list[tuple[str, float, int]], end_op: str, where: float, meta_too: bool
) -> None:
    """Damage to dead/q00000 (and dead/meta.json): fsck reports it; intact dead letters stay."""
    with tempfile.TemporaryDirectory() as spool:
        Queue(spool).close()
        dead_dir = os.path.join(spool, "dead")
        store = DeadLetters(dead_dir, lambda b: b, lambda *_: None)
        store.add([_entry(i) for i in range(n)])
        store.close()
        (frames,) = _frames(dead_dir, "dead/").values()
        chunk = Path(dead_dir, "q00000")
        data = chunk.read_bytes()
        used = max(f.end for f in frames)
        after, changed, cut = _damage(data, ops, end_op, where, used)
        chunk.write_bytes(after)
        if meta_too:
            Path(dead_dir, "meta.json").write_bytes(b"\0" * 40)

        _check_fsck(spool, "dead/q00000", after, frames, changed, cut)

        intact = {
            _payload(data, f) for f in frames if not _touched(f, changed, cut) and not f.acked
        }
        store = DeadLetters(dead_dir, lambda b: b, lambda *_: None)
        try:
            letters = store.list()
        finally:
            store.close()
        wires = {json.dumps(_wire(_entry(i))) for i in range(n)}
        got = {json.dumps(_wire_of(letter)) for letter in letters}
        assert got <= wires, "a dead letter that was never added came back"
        import pickle

        kept = {json.dumps(_wire(DeadEntry.from_wire(pickle.loads(p)))) for p in intact}
        assert kept <= got, "an intact dead letter was lost"


def _wire(e: DeadEntry) -> list[object]:
    return [e.record_id, e.payload.hex(), e.enqueued_at, e.error.message, e.attempts]


def _wire_of(letter: object) -> list[object]:
    from spoolkit.deadletter import DeadLetter

    assert isinstance(letter, DeadLetter)
    r = letter.record
    return [r.id, bytes(r.item).hex(), r.enqueued_at, letter.error.message, letter.attempts]


@pytest.mark.slow
@BIG
@given(**chunk_damage(max_records=200, chunksizes=[3, 16, 100]))
def test_fsck_and_open_under_damage_big_profile(
    *, n: int, acked: float, chunksize: int, target: float, ops: list[tuple[str, float, int]],
    end_op: str, where: float,
) -> None:  # fmt: skip
    """The chunk-damage property above, with more records and many more examples."""
    test_fsck_reports_exactly_the_damaged_regions_and_open_keeps_intact_records.hypothesis.inner_test(  # type: ignore[attr-defined]
        n=n, acked=acked, chunksize=chunksize, target=target, ops=ops, end_op=end_op, where=where
    )


# -- losses: every lost record reported, open never raises but a spoolkit error (issue 21) -----

WRONG_METAS = [
    b'{"format": "x"}',
    b'{"format": null}',
    b"[1, 2]",
    b"{}",
    b'{"format": 1e400, "uid": 7}',
    b'{"format": -1, "serializer": [1]}',
    b'{"format": 1, "chunksize": 123456789012345678901234567890, "uid": "zz"}',
    b"\xff\xfe{\x00}\x80",
    b'{"format": 123456789012345678901234567890}',
]
loss_kinds = st.sampled_from(["cut_at_record", "empty", "delete", "flip", "meta"])


def _loss_trial(  # noqa: PLR0917 - one trial, described by its drawn parameters
    kind: str, n: int, acked: float, chunksize: int, target: float, where: float, meta: int
) -> None:
    """Damage a spool one way; check fsck and the open report every lost record."""
    from spoolkit.errors import SpoolError

    with tempfile.TemporaryDirectory() as path:
        with Queue(path, chunksize=chunksize, serializer="raw", fsync="never") as q:
            q.put_many([_item(i) for i in range(n)])
            k = int(n * acked)
            q.ack(*q.get_batch(k, timeout=0)) if k else None
        before = _frames(path)
        names = sorted(before)
        waiting = {f.record_id for fs in before.values() for f in fs if not f.acked}
        name = names[min(int(target * len(names)), len(names) - 1)]
        file = Path(path, name)
        frames = before[name]
        detectable = True
        if kind == "cut_at_record":
            cut = frames[min(int(where * len(frames)), len(frames) - 1)].offset if frames else 64
            os.truncate(file, cut)
            detectable = not (name == names[-1] and cut % 4096 == 0)
        elif kind == "empty":
            os.truncate(file, 0)
        elif kind == "delete":
            file.unlink()
            older = [f for c in names if c < name for f in before[c]]
            # documented: the oldest chunk file removed whole, or one after every record before
            # it was handed out, looks like chunks delivered and removed; the newest, like a
            # full chunk before the next record
            detectable = bool(older) and not all(f.acked for f in older) and name != names[-1]
        elif kind == "flip":
            data = bytearray(file.read_bytes())
            used = max((f.end for f in frames), default=CHUNK_HEADER_SIZE)
            for j in range(1 + int(where * 5)):
                data[int((target * 7919 + j * 104729 * where) % used)] ^= 1 << (j % 8)
            file.write_bytes(bytes(data))
        else:
            Path(path, "meta.json").write_bytes(WRONG_METAS[meta % len(WRONG_METAS)])
        newer = kind == "meta" and WRONG_METAS[meta % len(WRONG_METAS)].endswith(b"890}")
        report = None
        with contextlib.suppress(SpoolError):
            report = fsck(path)
        if report is None:
            assert newer, "fsck refused a spool that is not of a newer format"
        else:
            out = CliRunner().invoke(cli, ["fsck", "--json", path])
            doc = json.loads(out.output)
            assert out.exit_code == (0 if report.ok else 1)
            assert doc["ok"] == report.ok
            assert sum("lost" in d for d in doc["damage"]) == len(report.lost)
        try:
            q = Queue(path, chunksize=chunksize, serializer="raw")
        except SpoolError:
            q = None
        except Exception as exc:
            pytest.fail(f"open raised {type(exc).__name__} (not a spoolkit error): {exc}")
        assert (q is None) == (report is None), "fsck and open disagree"
        if q is None:
            return
        with q:
            got = {getattr(d, "seq", d.id) for d in q.get_batch(1 << 20, timeout=0)}
            ranges = list(q.recovery.lost)
        lost = waiting - got
        if kind == "meta":  # the chunk files are untouched: nothing is lost, nothing reported
            assert not lost
            assert not ranges
            assert not report.lost
        if lost and detectable:
            for rid in lost:
                assert any(r.covers(rid) for r in ranges), f"{kind}: lost {rid} not reported"
                assert any(r.covers(rid) for r in report.lost), f"{kind}: fsck missed {rid}"
            assert not report.ok


LOSS_CASES = {
    "kind": loss_kinds,
    "n": st.integers(1, 60),
    "acked": st.floats(0, 1),
    "chunksize": st.sampled_from([3, 8, 25]),
    "target": st.floats(0, 1),
    "where": st.floats(0, 1),
    "meta": st.integers(0, 50),
}


@FUZZ
@given(**LOSS_CASES)
def test_every_lost_record_is_reported_and_open_raises_only_spoolkit_errors(
    *, kind: str, n: int, acked: float, chunksize: int, target: float, where: float, meta: int
) -> None:
    """Cut, emptied, deleted, flipped chunks and wrong meta.json: losses reported, no crash."""
    _loss_trial(kind, n, acked, chunksize, target, where, meta)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**LOSS_CASES)
def test_every_lost_record_is_reported_1000_trials(
    *, kind: str, n: int, acked: float, chunksize: int, target: float, where: float, meta: int
) -> None:
    """The loss property above over 1,000 trials."""
    _loss_trial(kind, n, acked, chunksize, target, where, meta)
