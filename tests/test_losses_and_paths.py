"""Losses nothing else reports (issue 21.2), meta.json of the wrong shape (21.3), repair keeping
the uid (21.5), and the paths a queue refuses (19.6)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from spoolkit import Queue
from spoolkit.cli import cli
from spoolkit.errors import FormatError, PathError
from spoolkit.queue.framing import CHUNK_HEADER_SIZE
from spoolkit.tools.inspect import fsck, inspect_spool
from spoolkit.tools.inspect_files import scan_chunk
from spoolkit.tools.repair import repair


def _spool(path: Path, n: int = 45, acked: int = 3, chunksize: int = 10) -> str:
    with Queue(str(path), chunksize=chunksize, serializer="raw") as q:
        q.put_many([b"item-%d" % i for i in range(n)])
        if acked:
            q.ack(*q.get_batch(acked, timeout=0))
        uid = q.uid
    return str(uid)


def _seq(d: object) -> int:
    return int(getattr(d, "seq", d.id))


def _damage(path: Path, kind: str) -> None:
    chunk = path / "q00002"  # records 20..29, between q00001 and q00003
    if kind == "cut":
        scan = scan_chunk(chunk.read_bytes(), "q00002")
        os.truncate(chunk, scan.frames[4].offset)  # exactly at a record boundary
    elif kind == "empty":
        os.truncate(chunk, 0)
    else:
        chunk.unlink()


@pytest.mark.parametrize(("kind", "first"), [("cut", 24), ("empty", 20), ("delete", 20)])
def test_middle_chunk_loss_is_reported_everywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, first: int
) -> None:
    """A middle chunk cut at a record boundary, emptied or deleted: fsck, open, log give ids."""
    uid = _spool(tmp_path)
    _damage(tmp_path, kind)
    report = fsck(tmp_path)
    assert not report.ok
    assert [(r.first_id, r.last_id, r.count) for r in report.lost] == [
        (f"{uid}-{first}", f"{uid}-29", 30 - first)
    ]
    out = CliRunner().invoke(cli, ["fsck", "--json", str(tmp_path)])
    assert out.exit_code == 1
    (lost,) = [d["lost"] for d in json.loads(out.output)["damage"] if "lost" in d]
    assert (lost["first_id"], lost["last_id"], lost["count"]) == (
        f"{uid}-{first}",
        f"{uid}-29",
        30 - first,
    )
    with caplog.at_level(logging.WARNING), Queue(str(tmp_path), serializer="raw") as q:
        assert q.recovery.lost_records == 30 - first
        assert any(f"{uid}-{first} to {uid}-29" in line for line in q.recovery.lost_ids())
        got = {_seq(d) for d in q.get_batch(100, timeout=0)}
    assert got == set(range(3, 45)) - set(range(first, 30))
    assert any("records_lost" in r.getMessage() for r in caplog.records)


def test_newest_chunk_cut_short_is_reported_once(tmp_path: Path) -> None:
    """The newest chunk cut at a record boundary: the ids from the cut on are reported, once."""
    uid = _spool(tmp_path)
    chunk = tmp_path / "q00004"
    os.truncate(chunk, scan_chunk(chunk.read_bytes(), "q00004").frames[2].offset)
    (lost,) = fsck(tmp_path).lost
    assert (lost.first_id, lost.last_id) == (f"{uid}-42", None)
    with Queue(str(tmp_path), serializer="raw") as q:
        assert [(r.first, r.last) for r in q.recovery.lost] == [(42, None)]
        q.put(b"after")
    with Queue(str(tmp_path), serializer="raw") as q:
        assert q.recovery.lost == []
    assert fsck(tmp_path).ok


def test_no_false_loss_after_reopens_and_out_of_order_acks(tmp_path: Path) -> None:
    """Reopening (ids jump past the head's capacity) and acks out of order are not losses."""
    path = str(tmp_path)
    with Queue(path, chunksize=5, serializer="raw") as q:
        q.put_many([b"a"] * 3)
    with Queue(path, chunksize=5, serializer="raw") as q:  # ids jump to 5
        q.put_many([b"b"] * 12)
        held = q.get_batch(1, timeout=0)  # record 0 stays handed out, unacknowledged
        q.ack(*q.get_batch(7, timeout=0))  # a later chunk is fully acknowledged and removed
        assert held
    report = fsck(path)
    assert report.ok, [r.describe() for r in report.lost]
    with Queue(path, chunksize=5, serializer="raw") as q:
        assert q.recovery.lost == []


WRONG = [b'{"format": "x"}', b'{"format": null}', b"[1, 2]", b"{}", b"\xff\xfe\x00", b'{"uid": 5}']


@pytest.mark.parametrize("content", WRONG)
def test_meta_json_of_the_wrong_shape_is_recovered_and_fsck_agrees(
    tmp_path: Path, content: bytes
) -> None:
    """meta.json valid JSON of the wrong shape, or not UTF-8: the open keeps the uid, no crash."""
    uid = _spool(tmp_path, n=12, acked=0)
    (tmp_path / "meta.json").write_bytes(content)
    assert fsck(tmp_path).records == 12
    with Queue(str(tmp_path), serializer="raw") as q:
        assert q.uid == uid
        assert len(q.get_batch(100, timeout=0)) == 12
    assert json.loads((tmp_path / "meta.json").read_bytes())["uid"] == uid


def test_meta_json_with_a_huge_newer_format_is_refused_by_both(tmp_path: Path) -> None:
    """A format number beyond this spoolkit's: open and fsck both refuse with FormatError."""
    _spool(tmp_path, n=3, acked=0)
    (tmp_path / "meta.json").write_text('{"format": ' + "9" * 40 + "}")
    with pytest.raises(FormatError):
        fsck(tmp_path)
    with pytest.raises(FormatError, match="digits"):
        Queue(str(tmp_path), serializer="raw")


def test_repair_keeps_the_uid_from_a_surviving_chunk_header(tmp_path: Path) -> None:
    """meta.json zeroed and the first header damaged: repair writes the uid of another header."""
    uid = _spool(tmp_path, n=25, acked=0)
    (tmp_path / "meta.json").write_bytes(b"\0" * 40)
    first = tmp_path / "q00000"
    data = bytearray(first.read_bytes())
    data[10] ^= 0xFF  # the header's checksum fails
    first.write_bytes(bytes(data))
    fixed = repair(tmp_path)
    assert fixed.rewritten == ("q00000",)
    assert fixed.refused == ()
    assert fixed.new_uids == ()
    with Queue(str(tmp_path), serializer="raw") as q:
        assert q.uid == uid
        assert len(q.get_batch(100, timeout=0)) == 25


def test_repair_refuses_to_invent_a_uid_unless_asked(tmp_path: Path) -> None:
    """No header nor meta.json holds the uid: repair refuses, says so; --new-uid writes one."""
    uid = _spool(tmp_path, n=5, acked=0)
    (tmp_path / "meta.json").unlink()
    chunk = tmp_path / "q00000"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    out = CliRunner().invoke(cli, ["fsck", "--repair", str(tmp_path)])
    assert out.exit_code == 1
    assert "not repaired" in out.output
    assert "--new-uid" in out.output
    assert chunk.read_bytes()[:CHUNK_HEADER_SIZE] == bytes(data[:CHUNK_HEADER_SIZE])
    out = CliRunner().invoke(cli, ["fsck", "--repair", "--new-uid", "--json", str(tmp_path)])
    doc = json.loads(out.output)
    (new,) = doc["repair"]["new_uids"]
    assert new["uid"] not in (uid, "0" * 32)
    with Queue(str(tmp_path), serializer="raw") as q:
        assert q.uid == new["uid"]


def test_empty_path_is_refused_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue("") raises PathError and leaves the current directory empty."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PathError, match="empty"):
        Queue("")
    assert os.listdir(tmp_path) == []


def test_directory_of_unrelated_files_is_refused_naming_some(tmp_path: Path) -> None:
    """A directory of unrelated files is refused; the error names a few of them."""
    for name in ("notes.txt", "photo.jpg", "src", "zeta.py"):
        (tmp_path / name).write_text("x")
    with pytest.raises(PathError, match=r"'notes\.txt', 'photo\.jpg', 'src' and 1 more"):
        Queue(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "photo.jpg", "src", "zeta.py"]


def test_empty_dir_existing_spool_lanes_and_pqueue_dir_still_open(tmp_path: Path) -> None:
    """An empty directory, a spool (with a stray file), a lane and a pqueue directory open."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("x")
    Queue(str(empty)).close()
    spool = tmp_path / "spool"
    _spool(spool, n=2, acked=0)
    (spool / "README").write_text("x")
    Queue(str(spool), serializer="raw").close()
    lane = tmp_path / "s" / "lanes" / "1"
    lane.mkdir(parents=True)
    Queue(str(lane)).close()
    pq = tmp_path / "pq"
    pq.mkdir()
    (pq / "info").write_bytes(b"")
    (pq / "q00000").write_bytes(b"")
    failed: Exception | None = None
    try:
        Queue(str(pq)).close()
    except Exception as exc:  # a bogus pqueue file may fail later, but not as a path
        failed = exc
    assert not isinstance(failed, PathError), failed


def _hold_lock(lock: Path) -> subprocess.Popen[str]:
    """A live process holding ``lock`` (as a forked helper of a dead writer would)."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_repair_names_a_dead_pid_in_a_held_lock_truthfully(tmp_path: Path) -> None:
    """A lock held by a helper of a dead writer: repair does not claim that dead pid uses it."""
    _spool(tmp_path, n=5, acked=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    (tmp_path / "lock").write_text(dead.stdout)
    holder = _hold_lock(tmp_path / "lock")
    try:
        out = CliRunner().invoke(cli, ["fsck", "--repair", str(tmp_path)])
    finally:
        holder.communicate("")
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())  # rich wraps long lines
    assert f"pid {int(dead.stdout)} (in its lock file) is not running" in text
    assert f"in use by pid {int(dead.stdout)}" not in text


def test_repair_after_a_killed_writer_does_not_say_in_use(tmp_path: Path) -> None:
    """A spool whose writer was killed -9 (stale pids in its lock files): repair runs, exit 0."""
    spool = tmp_path / "s"
    code = (
        "import sys\n"
        "from spoolkit import Spool\n"
        "from spoolkit.errors import PermanentError\n"
        "def sink(batch):\n"
        "    raise PermanentError('no')\n"
        f"s = Spool({str(spool)!r}, sink, serializer='json')\n"
        "s.start()\n"
        "[s.put({'i': i}) for i in range(20)]\n"
        "s.flush(timeout=10)\n"
        "[s.put({'j': i}) for i in range(20)]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with proc:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    chunk = spool / "q00000"
    data = bytearray(chunk.read_bytes())
    data[CHUNK_HEADER_SIZE + 40] ^= 0xFF
    chunk.write_bytes(bytes(data))
    out = CliRunner().invoke(cli, ["fsck", "--repair", str(spool)])
    assert out.exit_code == 0, out.output
    assert "in use" not in out.output
    assert "repaired 1 chunk file(s)" in out.output


def test_fsck_and_inspect_count_the_same_chunk_files_and_say_so(tmp_path: Path) -> None:
    """fsck's first line counts the lanes' chunk files as inspect does, dead letters' apart."""
    spool = tmp_path / "s"
    _spool(spool, n=25, acked=0)
    dead = spool / "dead"
    Queue(str(dead)).close()
    out = CliRunner().invoke(cli, ["fsck", str(spool)])
    text = " ".join(out.output.split())  # rich wraps long lines
    assert "3 chunk file(s) (dead letters' not counted: 1 in dead/)" in text
    assert len(inspect_spool(spool).chunks) == len(fsck(spool).lane_chunks) == 3
