"""Read-only inspection, peek, fsck and repair of spool directories (spoolkit.tools.inspect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from spoolkit import Queue, Record, Spool
from spoolkit.errors import FormatError, PathError, PermanentError
from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, Frame
from spoolkit.tools import inspect as insp
from spoolkit.tools import inspect_files as _inspect_files
from spoolkit.tools import repair as _repair
from tests.helpers.lane_holder import lane_holder

CHILD = """
import sys, threading
from spoolkit import Queue, Record, Spool
q = Queue(sys.argv[1], chunksize=20, serializer="raw", fsync="always")
q.put_many([b"x%05d" % i for i in range(25)])
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
print("ready", flush=True)
i = 0
while not done.is_set():
    q.put(b"w%05d" % i)
    i += 1
    if i % 10 == 0:  # keep the backlog small: chunk files come and go
        q.ack(*q.get_batch(1000, timeout=0))
"""


def _item(i: int) -> bytes:
    return f"record-{i:04d}".encode()


def _frames(path: Path) -> dict[str, list[tuple[bytes, bool, int]]]:
    """Per chunk file: (payload, acked, record id) of every intact frame."""
    out: dict[str, list[tuple[bytes, bool, int]]] = {}
    for name in sorted(os.listdir(path)):
        if not name.startswith("q"):
            continue
        data = (path / name).read_bytes()
        found = []
        for f in framing.scan(data, int(name[1:]), CHUNK_HEADER_SIZE, len(data), 1 << 20):
            if isinstance(f, Frame):
                body = f.offset + FRAME_HEADER_SIZE
                found.append((data[body : body + f.length], f.acked, f.record_id))
        out[name] = found
    return out


def _offsets(path: Path, name: str) -> list[Frame]:
    data = (path / name).read_bytes()
    scan = framing.scan(data, int(name[1:]), CHUNK_HEADER_SIZE, len(data), 1 << 20)
    return [f for f in scan if isinstance(f, Frame)]


def _flip(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A closed raw spool: 30 records in chunks of 10, the first 5 acknowledged."""
    path = tmp_path / "spool"
    with Queue(path, chunksize=10, serializer="raw") as q:
        q.put_many([_item(i) for i in range(30)])
        q.ack(*q.get_batch(5, timeout=0))
    return path


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process that owns a spool and keeps writing to (and acking) it."""
    path = tmp_path / "live"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield path, proc
        proc.kill()


def test_inspect_counts_backlog_chunks_and_age(spool: Path) -> None:
    """inspect reports unacknowledged records, chunk files and the oldest record's age."""
    info = insp.inspect_spool(spool)
    assert info.backlog == 25
    assert [c.name for c in info.chunks] == ["q00000", "q00001", "q00002"]
    assert info.chunks[0].frames == 10
    assert info.chunks[0].pending == 5
    assert info.serializer == "raw"
    assert info.format == framing.FORMAT_VERSION
    assert not info.locked
    assert info.holder_pid is None
    assert info.dead_letters == 0
    assert info.damaged_regions == 0
    assert info.bytes_on_disk >= sum(c.size for c in info.chunks)
    assert info.oldest_enqueued_at is not None
    age = info.oldest_age(now=info.oldest_enqueued_at + 12.5)
    assert age == pytest.approx(12.5)


def test_inspect_reads_a_spool_owned_and_written_by_another_process(
    owner: tuple[Path, subprocess.Popen[str]],
) -> None:
    """inspect, peek and fsck read a live spool without its lock, while it is written."""
    path, proc = owner
    for _ in range(30):
        info = insp.inspect_spool(path)
        assert info.locked
        assert info.holder_pid == proc.pid
        assert info.backlog >= 0
        assert len(insp.peek(path, 3)) <= 3
        assert insp.fsck(path).live
    assert proc.poll() is None  # the owner was never disturbed


def test_a_chunk_vanishing_mid_read_is_skipped(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk listed but removed before it is read (fully acked by its owner) is skipped."""
    real = _inspect_files.chunk_names

    def listed_then_gone(path: str) -> list[str]:
        names = real(path)
        if names and not path.endswith("dead"):
            os.unlink(os.path.join(path, names[0]))
        return names

    monkeypatch.setattr(_inspect_files, "chunk_names", listed_then_gone)
    info = insp.inspect_spool(spool)
    assert [c.name for c in info.chunks] == ["q00001", "q00002"]
    assert info.backlog == 20


def test_peek_shows_the_next_records_without_consuming_them(spool: Path) -> None:
    """peek returns the next pending records in order and leaves them on disk."""
    records = insp.peek(spool, 3)
    assert [r.item for r in records] == [_item(5), _item(6), _item(7)]
    assert [r.id for r in records] == [5, 6, 7]
    assert all(r.decode_error is None for r in records)
    assert insp.inspect_spool(spool).backlog == 25
    with Queue(spool, chunksize=10, serializer="raw") as q:
        assert q.get_nowait() == _item(5)


@pytest.mark.parametrize(
    ("serializer", "item"),
    [("pickle", {"a": (1, 2)}), ("json", {"msg": "hi", "n": [1, 2]}), ("raw", b"\x00\xff")],
)
def test_peek_decodes_with_the_spool_serializer(
    tmp_path: Path, serializer: str, item: object
) -> None:
    """peek decodes payloads with the serializer named in meta.json."""
    with Queue(tmp_path / "s", serializer=serializer) as q:
        q.put(item)
    (record,) = insp.peek(tmp_path / "s", 10)
    assert record.item == item


def test_peek_keeps_bytes_of_a_custom_serializer(tmp_path: Path) -> None:
    """With a serializer peek does not know, items are None and the payload is kept."""

    class Upper:
        name = "upper"

        def dumps(self, obj: object) -> bytes:
            return str(obj).upper().encode()

        def loads(self, data: bytes) -> object:
            return data.decode()

    with Queue(tmp_path / "s", serializer=Upper()) as q:
        q.put("abc")
    (record,) = insp.peek(tmp_path / "s")
    assert record.item is None
    assert record.payload == b"ABC"
    assert record.decode_error == "unknown serializer 'upper'"


def test_peek_of_zero_and_of_an_empty_spool(tmp_path: Path, spool: Path) -> None:
    """peek with n=0, or on a spool with nothing pending, returns nothing."""
    assert insp.peek(spool, 0) == []
    with Queue(tmp_path / "empty"):
        pass
    assert insp.peek(tmp_path / "empty") == []
    with pytest.raises(ValueError, match="n must be"):
        insp.peek(spool, -1)


@pytest.mark.parametrize("kind", ["missing", "file", "not_a_spool"])
def test_bad_paths_raise_path_error(tmp_path: Path, kind: str) -> None:
    """A missing path, a file, or a directory holding no spool is a PathError."""
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("hi")
    elif kind == "not_a_spool":
        target.mkdir()
        (target / "other.txt").write_text("hi")
    for fn in (insp.inspect_spool, insp.peek, insp.fsck, _repair.repair):
        with pytest.raises(PathError):
            fn(target)


def test_a_newer_format_is_refused(spool: Path) -> None:
    """A spool whose meta.json names a newer format is a FormatError."""
    info = json.loads((spool / "meta.json").read_text())
    (spool / "meta.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(FormatError, match="upgrade spoolkit"):
        insp.fsck(spool)


def test_fsck_of_a_clean_spool_is_ok(spool: Path) -> None:
    """Every checksum verifies on an undamaged spool."""
    report = insp.fsck(spool)
    assert report.ok
    assert report.records == 30
    assert report.pending == 25
    assert report.damage == ()
    assert not report.live
    assert report.warnings == ()


def test_fsck_reports_the_exact_damaged_frame(spool: Path) -> None:
    """A flipped payload byte is reported as exactly that frame's byte range."""
    frames = _offsets(spool, "q00001")
    victim = frames[3]
    _flip(spool / "q00001", victim.offset + FRAME_HEADER_SIZE + 2)
    report = insp.fsck(spool)
    assert not report.ok
    assert report.damage == (insp.DamagedRegion("q00001", victim.offset, victim.end),)
    assert report.damaged_bytes == victim.end - victim.offset
    assert report.records == 29


def test_fsck_reports_a_damaged_chunk_header(spool: Path) -> None:
    """A damaged chunk header is the region 0..64 of that chunk; its frames still count."""
    _flip(spool / "q00002", 10)
    report = insp.fsck(spool)
    assert report.damage == (insp.DamagedRegion("q00002", 0, CHUNK_HEADER_SIZE),)
    assert report.records == 30


def test_fsck_warns_about_a_missing_meta_file(spool: Path) -> None:
    """A missing meta.json is a warning (no record is lost), not damage."""
    (spool / "meta.json").unlink()
    report = insp.fsck(spool)
    assert report.ok
    assert "meta.json" in report.warnings[0]


def test_repair_keeps_every_intact_record_and_its_ack_state(spool: Path) -> None:
    """repair drops only the damaged bytes; intact frames keep their ids and ack words."""
    before = _frames(spool)
    frames0 = _offsets(spool, "q00000")
    frames1 = _offsets(spool, "q00001")
    _flip(spool / "q00000", frames0[2].offset + 5)  # an acknowledged record
    _flip(spool / "q00001", frames1[7].offset + FRAME_HEADER_SIZE)  # a pending one
    with open(spool / "q00001", "r+b") as f:  # garbage after the last frame
        f.seek(_offsets(spool, "q00001")[-1].end)
        f.write(b"junk" * 8)

    fixed = _repair.repair(spool)

    assert fixed.rewritten == ("q00000", "q00001")
    assert len(fixed.before.damage) == 3
    assert fixed.after.ok
    assert fixed.kept_records == 18
    assert fixed.kept_pending == 5 + 9
    after = _frames(spool)
    assert after["q00000"] == before["q00000"][:2] + before["q00000"][3:]
    assert after["q00001"] == before["q00001"][:7] + before["q00001"][8:]
    assert after["q00002"] == before["q00002"]
    lost = _item(17)
    with Queue(spool, chunksize=10, serializer="raw") as q:
        got = [q.get_nowait() for _ in range(q.qsize())]
    assert got == [_item(i) for i in range(5, 30) if _item(i) != lost]


def test_repair_rebuilds_a_damaged_chunk_header(spool: Path) -> None:
    """A chunk whose header is damaged gets a fresh one; all its records are kept."""
    _flip(spool / "q00001", 20)
    fixed = _repair.repair(spool)
    assert fixed.rewritten == ("q00001",)
    assert fixed.kept_records == 10
    assert fixed.after.ok
    header = framing.decode_chunk_header((spool / "q00001").read_bytes()[:CHUNK_HEADER_SIZE])
    assert header is not None
    assert header.index == 1
    assert header.first_id == 10
    assert header.capacity == 10
    with Queue(spool, chunksize=10, serializer="raw") as q:
        assert q.qsize() == 25


def test_repair_of_a_clean_spool_changes_nothing(spool: Path) -> None:
    """With no damage, repair rewrites no file."""
    stamp = {n: (spool / n).stat().st_mtime_ns for n in os.listdir(spool)}
    fixed = _repair.repair(spool)
    assert fixed.rewritten == ()
    assert fixed.after.ok
    for name in ("q00000", "q00001", "q00002"):
        assert (spool / name).stat().st_mtime_ns == stamp[name]


def test_repair_leaves_a_lane_a_live_process_holds_alone(
    owner: tuple[Path, subprocess.Popen[str]],
) -> None:
    """repair skips the lane another process holds, names its pid, and rewrites nothing."""
    path, proc = owner
    fixed = _repair.repair(path)
    assert fixed.skipped == ((0, proc.pid),)
    assert fixed.rewritten == ()
    assert fixed.before.live
    assert proc.poll() is None


def _reject(batch: Sequence[Record]) -> None:
    if any(r.item["n"] % 2 for r in batch):
        raise PermanentError(f"odd record in {[r.item['n'] for r in batch]}")


@pytest.fixture
def spool_with_dead_letters(tmp_path: Path) -> Path:
    """A stopped Spool whose sink refused the odd records of 0..5 (one per batch)."""
    path = tmp_path / "spool"
    spool = Spool(path, _reject, workers=1, batch_size=1, serializer="json")
    spool.start()
    spool.put_many([{"n": i} for i in range(6)])
    assert spool.flush(10)
    spool.stop()
    waiting = Spool(path, None, serializer="json")  # never started: its record stays waiting
    waiting.put({"n": 100})
    waiting.stop()
    return path


def test_dead_letters_are_listed_without_the_lock(spool_with_dead_letters: Path) -> None:
    """dead_letters reads dead/ and decodes each entry and its item."""
    letters = insp.dead_letters(spool_with_dead_letters)
    assert [d.item for d in letters] == [{"n": 1}, {"n": 3}, {"n": 5}]
    assert all(d.error_type == "spoolkit.errors.PermanentError" for d in letters)
    assert letters[0].error == "odd record in [1]"
    assert letters[0].attempts == 1
    assert letters[0].id.endswith("-1")
    assert letters[0].decode_error is None


def test_inspect_counts_dead_letters_and_last_error(spool_with_dead_letters: Path) -> None:
    """inspect reports the dead letters and the newest one's error as the last error."""
    info = insp.inspect_spool(spool_with_dead_letters)
    assert info.dead_letters == 3
    assert info.last_error == "spoolkit.errors.PermanentError: odd record in [5]"
    assert info.backlog == 1


def test_fsck_and_repair_cover_the_dead_letters(spool_with_dead_letters: Path) -> None:
    """Damage in dead/ is reported as dead/qNNNNN and repaired keeping the other letters."""
    dead = spool_with_dead_letters / "dead"
    victim = _offsets(dead, "q00000")[1]
    _flip(dead / "q00000", victim.end - 1)
    report = insp.fsck(spool_with_dead_letters)
    assert report.damage == (insp.DamagedRegion("dead/q00000", victim.offset, victim.end),)
    assert report.dead_letters == 2
    fixed = _repair.repair(spool_with_dead_letters)
    assert fixed.rewritten == ("dead/q00000",)
    assert fixed.after.ok
    assert [d.item for d in insp.dead_letters(spool_with_dead_letters)] == [{"n": 1}, {"n": 5}]


# -- lanes: a spool written by several processes -----------------------------------------------


@pytest.fixture
def three_lanes(tmp_path: Path) -> Path:
    """A json spool whose lanes 0, 1 and 2 were written by three Spools, now stopped: lane i
    holds 3 + i records ``{"lane": i, "n": n}``, put in turns (lane 0, 1, 2, 0, 1, 2...)."""
    path = tmp_path / "spool"
    spools = [Spool(path, None, serializer="json") for _ in range(3)]
    try:
        for n in range(5):
            for i, s in enumerate(spools):
                if n < 3 + i:
                    s.put({"lane": i, "n": n})
    finally:
        for s in spools:
            s.stop(drain=False)
    return path


def _put_in_new_lane(path: Path, items: list[object]) -> None:
    """Put ``items`` through a Spool of this process (it takes a free lane, or a new one)."""
    spool = Spool(path, None, serializer="json")
    try:
        spool.put_many(items)
    finally:
        spool.stop(drain=False)


def test_inspect_adds_up_every_lane(three_lanes: Path) -> None:
    """inspect counts the backlog and chunk files of every lane and lists each lane."""
    info = insp.inspect_spool(three_lanes)
    assert [(lane.number, lane.backlog) for lane in info.lanes] == [(0, 3), (1, 4), (2, 5)]
    assert info.backlog == 12
    assert [c.name for c in info.chunks] == ["q00000", "lanes/1/q00000", "lanes/2/q00000"]
    assert info.record_bytes == sum(lane.record_bytes for lane in info.lanes) > 0
    assert info.lanes[2].path == str(three_lanes / "lanes" / "2")
    assert len({lane.uid for lane in info.lanes}) == 3
    assert info.uid == info.lanes[0].uid
    assert info.oldest_enqueued_at == info.lanes[0].oldest_enqueued_at
    assert not info.locked
    assert not any(lane.locked for lane in info.lanes)


def test_peek_merges_every_lane_oldest_first(three_lanes: Path) -> None:
    """peek returns the records of every lane in the order they were put, each with its lane
    and the record id its sink would see."""
    records = insp.peek(three_lanes, 100)
    put_order = [(i, n) for n in range(5) for i in range(3) if n < 3 + i]
    assert [(r.item["lane"], r.item["n"]) for r in records] == put_order
    assert [r.lane for r in records] == [r.item["lane"] for r in records]
    uids = {lane.number: lane.uid for lane in insp.lanes(three_lanes)}
    assert all(r.record_id == f"{uids[r.lane]}-{r.id}" for r in records)
    assert records[1].chunk == "lanes/1/q00000"
    assert insp.peek(three_lanes, 4) == records[:4]


def test_fsck_finds_damage_in_any_lane(three_lanes: Path) -> None:
    """A flipped byte in lane 2 is reported there, as lanes/2/q00000, by fsck and inspect."""
    lane2 = three_lanes / "lanes" / "2"
    victim = _offsets(lane2, "q00000")[1]
    _flip(lane2 / "q00000", victim.offset + FRAME_HEADER_SIZE)
    report = insp.fsck(three_lanes)
    assert report.damage == (insp.DamagedRegion("lanes/2/q00000", victim.offset, victim.end),)
    assert report.records == 11
    assert report.pending == 11
    assert [lane.damaged_regions for lane in report.lanes] == [0, 0, 1]
    assert insp.inspect_spool(three_lanes).damaged_regions == 1


def test_readers_see_a_lane_a_live_process_holds(tmp_path: Path) -> None:
    """inspect, peek and fsck read the lane another process holds, and name its pid."""
    path = tmp_path / "spool"
    with lane_holder(path, "hold", 2) as holder:
        _put_in_new_lane(path, [{"mine": i} for i in range(3)])
        info = insp.inspect_spool(path)
        assert [
            (lane.number, lane.locked, lane.holder_pid, lane.backlog) for lane in info.lanes
        ] == [
            (0, True, holder.pid, 2),
            (1, False, None, 3),
        ]
        assert info.locked
        assert info.holder_pid == holder.pid
        assert info.backlog == 5
        assert len(insp.peek(path, 10)) == 5
        report = insp.fsck(path)
        assert report.live
        assert report.ok
        assert report.records == 5
        assert holder.proc.poll() is None


def test_repair_rewrites_free_lanes_and_skips_held_ones(tmp_path: Path) -> None:
    """repair rewrites the damaged chunk of a lane nobody holds, leaves the lane a live process
    holds untouched (naming its pid), and says the damage left is there."""
    path = tmp_path / "spool"
    with lane_holder(path, "hold", 4) as holder:
        _put_in_new_lane(path, [{"mine": i} for i in range(4)])
        lane1 = path / "lanes" / "1"
        _flip(lane1 / "q00000", _offsets(lane1, "q00000")[2].offset + FRAME_HEADER_SIZE)
        _flip(path / "q00000", _offsets(path, "q00000")[1].offset + FRAME_HEADER_SIZE)
        held_bytes = (path / "q00000").read_bytes()

        fixed = _repair.repair(path)

        assert fixed.skipped == ((0, holder.pid),)
        assert fixed.rewritten == ("lanes/1/q00000",)
        assert fixed.kept_records == 3
        assert (path / "q00000").read_bytes() == held_bytes
        assert [d.chunk for d in fixed.after.damage] == ["q00000"]
        assert fixed.skipped_damage
        mine = [r.item for r in insp.peek(path, 10) if r.lane == 1]
        assert mine == [{"mine": 0}, {"mine": 1}, {"mine": 3}]


@pytest.fixture
def lanes_with_dead_letters(tmp_path: Path) -> Path:
    """Lane 0 holds 2 records; lane 1's Spool had its odd records of 0..5 refused (dead
    letters 1, 3, 5, in the spool's shared dead/)."""
    path = tmp_path / "spool"
    first = Spool(path, None, serializer="json")
    try:
        first.put_many([{"n": 100}, {"n": 101}])
        second = Spool(path, _reject, workers=1, batch_size=1, serializer="json")
        second.start()
        second.put_many([{"n": i} for i in range(6)])
        assert second.flush(30)
        second.stop()
    finally:
        first.stop(drain=False)
    return path


def test_dead_letters_name_the_lane_that_issued_them(lanes_with_dead_letters: Path) -> None:
    """Each dead letter is listed with the lane whose uid its record id carries."""
    letters = insp.dead_letters(lanes_with_dead_letters)
    assert [d.item for d in letters] == [{"n": 1}, {"n": 3}, {"n": 5}]
    lane1 = insp.lanes(lanes_with_dead_letters)[1]
    assert [d.lane for d in letters] == [1, 1, 1]
    assert all(d.id.startswith(f"{lane1.uid}-") for d in letters)
    assert [d.item for d in insp.dead_letters(lanes_with_dead_letters, decode=False)] == [None] * 3


def test_inspect_and_fsck_count_the_same_chunk_files(lanes_with_dead_letters: Path) -> None:
    """The chunk files inspect counts are the lanes' chunk files fsck checks (dead letters'
    apart), and they are the chunk files on disk."""
    path = lanes_with_dead_letters
    info = insp.inspect_spool(path)
    report = insp.fsck(path)
    on_disk = sorted(str(f.relative_to(path)) for f in [*path.glob("q*"), *path.glob("lanes/*/q*")])
    assert sorted(c.name for c in info.chunks) == on_disk
    assert [c.name for c in report.lane_chunks] == [c.name for c in info.chunks]
    assert [c.name for c in report.dead_chunks] == sorted(
        str(f.relative_to(path)) for f in path.glob("dead/q*")
    )
    assert report.dead_chunks
    assert report.dead_letters == info.dead_letters == 3
    assert report.pending == info.backlog == 2
