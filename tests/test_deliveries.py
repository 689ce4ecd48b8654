"""Delivery counts: each hand-out is counted on disk, and a record that keeps killing its
consumer is dead-lettered after ``max_deliveries`` instead of crash-looping the spool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from spoolkit import Queue, Spool
from spoolkit._internal.log import get_logger
from spoolkit.backends.disk import DiskBackend
from spoolkit.cli import cli
from spoolkit.errors import ConfigError
from spoolkit.queue.framing import ACK_OFFSET, FRAME_HEADER_SIZE, MAX_DELIVERIES
from spoolkit.spool.screen import screened
from spoolkit.spool.stats import Counters
from spoolkit.testing import MemorySink
from spoolkit.tools import inspect as insp


def _take(path: Path, n: int) -> list[tuple[object, int]]:
    """Open the queue, take ``n`` records without acknowledging them, close it."""
    with Queue(path) as q:
        return [(d.item, d.deliveries) for d in q.get_batch(n, timeout=0)]


def test_hand_outs_not_acknowledged_are_counted_across_reopens(tmp_path: Path) -> None:
    """A record taken and not acknowledged is handed out with 1, 2, 3... on each open; an
    acknowledged one is gone, and a record never taken starts at 1."""
    with Queue(tmp_path) as q:
        q.put_many(["a", "b", "c"])
    assert _take(tmp_path, 2) == [("a", 1), ("b", 1)]
    assert _take(tmp_path, 2) == [("a", 2), ("b", 2)]
    with Queue(tmp_path) as q:
        a, b, c = q.get_batch(3, timeout=0)
        assert (a.deliveries, b.deliveries, c.deliveries) == (3, 3, 1)
        q.ack(a)
    assert _take(tmp_path, 3) == [("b", 4), ("c", 2)]


def test_nack_then_take_counts_one_more_delivery(tmp_path: Path) -> None:
    """A record handed back with nack and taken again says so."""
    with Queue(tmp_path) as q:
        q.put("x")
        (d,) = q.get_batch(1)
        q.nack(d)
        (again,) = q.get_batch(1)
        assert (again.item, again.deliveries) == ("x", 2)
        assert "deliveries=2" in repr(again)


def test_the_count_saturates_and_never_reads_as_acknowledged(tmp_path: Path) -> None:
    """After 255 deliveries the count stays at 255, and the record is still pending."""
    with Queue(tmp_path) as q:
        q.put("x")
        for _ in range(MAX_DELIVERIES + 20):
            (d,) = q.get_batch(1)
            q.nack(d)
        (d,) = q.get_batch(1)
        assert d.deliveries == MAX_DELIVERIES
    assert _take(tmp_path, 1) == [("x", MAX_DELIVERIES)]


def test_a_count_survives_kill_9_of_the_consumer(tmp_path: Path) -> None:
    """A process that took records and was killed with SIGKILL leaves their count on disk."""
    with Queue(tmp_path) as q:
        q.put_many([1, 2])
    code = textwrap.dedent(
        f"""
        import sys, time
        from spoolkit import Queue
        q = Queue({str(tmp_path)!r})
        q.get_batch(2, timeout=0)
        print("taken", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "taken\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    assert _take(tmp_path, 2) == [(1, 2), (2, 2)]


def test_counted_records_are_pending_to_fsck_and_inspect_not_damage(tmp_path: Path) -> None:
    """Delivery words are no damage: fsck is clean and counts the records as pending."""
    with Queue(tmp_path) as q:
        q.put_many(range(5))
    _take(tmp_path, 3)
    report = insp.fsck(tmp_path)
    assert report.ok
    assert report.pending == 5
    assert insp.inspect_spool(tmp_path).backlog == 5


def test_peek_shows_each_record_s_chunk_and_deliveries(tmp_path: Path) -> None:
    """peek (and spoolkit peek --json) tells how often each waiting record was handed out."""
    with Queue(tmp_path) as q:
        q.put_many(["a", "b", "c"])
    _take(tmp_path, 2)
    _take(tmp_path, 1)
    peeked = insp.peek(tmp_path)
    assert [(r.item, r.deliveries, r.chunk) for r in peeked] == [
        ("a", 2, "q00000"),
        ("b", 1, "q00000"),
        ("c", 0, "q00000"),
    ]
    result = CliRunner().invoke(cli, ["peek", str(tmp_path), "--json"])
    assert [r["deliveries"] for r in json.loads(result.output)] == [2, 1, 0]


def test_a_damaged_ack_word_reads_as_pending_and_counts_from_one(tmp_path: Path) -> None:
    """An ack word that is neither acknowledged nor a delivery count is a pending record that
    was never handed out."""
    with Queue(tmp_path) as q:
        q.put("x")
    chunk = tmp_path / "q00000"
    data = bytearray(chunk.read_bytes())
    first = 64  # the first frame follows the 64-byte chunk header
    data[first + ACK_OFFSET : first + FRAME_HEADER_SIZE] = b"\x13\x37\xbe\xef"
    chunk.write_bytes(bytes(data))
    assert _take(tmp_path, 1) == [("x", 1)]


def test_spool_dead_letters_a_record_over_max_deliveries_without_a_sink_call(
    tmp_path: Path,
) -> None:
    """A record already handed out max_deliveries times goes to the dead letters with an
    error saying so; the sink never sees it, and the other records are delivered."""
    backend = DiskBackend(tmp_path)
    backend.put_many(["poison", "ok-1", "ok-2"])
    backend.close()
    for _ in range(10):
        backend = DiskBackend(tmp_path)
        assert [m.item for m in backend.get_batch(1, 0)] == ["poison"]
        backend.close()
    sink = MemorySink()
    with Spool(tmp_path, sink, workers=1) as spool:
        assert spool.flush(10)
        [letter] = spool.dead_letters.list()
        stats = spool.stats()
    assert [r.item for r in sink.records] == ["ok-1", "ok-2"]
    assert letter.record.item == "poison"
    assert letter.attempts == 11
    assert "was delivered 11 times, more than max_deliveries=10" in letter.error.message
    assert stats.dead_lettered == 1
    assert stats.delivered == 2


@pytest.mark.parametrize("bad", [0, 255, -1, True, 2.5])
def test_max_deliveries_out_of_range_is_a_config_error(tmp_path: Path, bad: object) -> None:
    """max_deliveries must be 1 to 254 (the count saturates at 255) or None."""
    with pytest.raises(ConfigError, match="max_deliveries must be an int from 1 to 254"):
        DiskBackend(tmp_path, max_deliveries=bad)  # type: ignore[arg-type]


def test_max_deliveries_none_hands_records_out_forever(tmp_path: Path) -> None:
    """With max_deliveries=None nothing is screened, whatever the count."""
    backend = DiskBackend(tmp_path, max_deliveries=None)
    backend.put_many(["x"])
    backend.close()
    for _ in range(12):
        _take(tmp_path, 1)
    sink = MemorySink()
    with Spool(tmp_path, sink, backend=DiskBackend(tmp_path, max_deliveries=None)) as spool:
        assert spool.flush(10)
    assert [r.item for r in sink.records] == ["x"]


CRASHING_CHILD = """
import os, signal, sys
from spoolkit import Spool
from spoolkit.backends.disk import DiskBackend

path, log = sys.argv[1], sys.argv[2]

def sink(batch):
    for r in batch:
        if r.item == "poison":
            os.kill(os.getpid(), signal.SIGKILL)  # a sink bug that takes the process down
        with open(log, "a") as f:
            f.write(r.item + "\\n")

spool = Spool(path, sink, workers=1, batch_size=1, backend=DiskBackend(path, max_deliveries=3))
spool.start()
assert spool.flush(30)
spool.stop()
"""


def test_a_record_that_kills_its_consumer_is_dead_lettered_after_max_deliveries(
    tmp_path: Path,
) -> None:
    """A sink that kills the process (SIGKILL) on one record: after max_deliveries restarts
    the record is dead-lettered and everything else is delivered, instead of a crash loop."""
    path, log = tmp_path / "spool", tmp_path / "delivered.log"
    backend = DiskBackend(path)
    backend.put_many(["a", "poison", "b"])
    backend.close()
    codes = []
    for _ in range(6):
        run = subprocess.run(
            [sys.executable, "-c", CRASHING_CHILD, str(path), str(log)],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            timeout=60,
            check=False,
        )
        codes.append(run.returncode)
        if run.returncode == 0:
            break
    assert codes == [-signal.SIGKILL] * 3 + [0]
    assert log.read_text().split() == ["a", "b"]
    with Spool(path, MemorySink()) as spool:
        [letter] = spool.dead_letters.list()
    assert letter.record.item == "poison"
    assert "was delivered 4 times, more than max_deliveries=3" in letter.error.message


def test_a_dead_letter_store_that_fails_hands_the_batch_back(tmp_path: Path) -> None:
    """If the record over max_deliveries cannot be dead-lettered (a full disk), the spool's
    screening raises and nothing it took stays handed out: the records are taken again."""
    backend = DiskBackend(tmp_path, max_deliveries=1)
    backend.put_many(["poison", "ok"])
    assert [m.deliveries for m in backend.get_batch(1, 0)] == [1]
    backend.close()

    class FullDisk:
        def add(self, entries: object) -> None:
            raise OSError(28, "No space left on device")

    backend = DiskBackend(tmp_path, max_deliveries=1)
    take = screened(backend, FullDisk(), Counters(), get_logger())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left"):
        take(2, 0)
    assert backend.waiting() == 2
    again = backend.get_batch(2, 0)
    assert [(m.item, m.deliveries) for m in again] == [("poison", 3), ("ok", 2)]
    backend.close()
