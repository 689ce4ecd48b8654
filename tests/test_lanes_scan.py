"""What a consuming Spool does with lanes it finds while it runs: unreadable ones are left alone."""

from __future__ import annotations

from pathlib import Path

from spoolkit import Spool
from spoolkit.testing import MemorySink


def test_a_lane_written_with_another_serializer_is_left_alone_without_crashing_workers(
    tmp_path: Path,
) -> None:
    """A free lane holding pickle records, met by a JSON consumer: skipped, logged once, and
    the consumer's own records are delivered with no worker crash."""
    path = tmp_path / "s"
    sink = MemorySink()
    consumer = Spool(path, sink, serializer="json", batch_interval=0)  # takes the root lane
    writer = Spool(path, None, serializer="pickle", consume=False)  # takes lanes/1
    writer.put_many(range(5))
    writer.stop()  # lets lanes/1 go, 5 pickle records in it
    consumer.start()
    try:
        consumer._backend.adopt()  # type: ignore[attr-defined]
        consumer.put({"n": 1})
        assert sink.wait_for(1, 30)
        consumer._backend.adopt()  # type: ignore[attr-defined]
        stats = consumer.stats()
        assert stats.worker_restarts == 0
        assert [r.item for r in sink.records] == [{"n": 1}]
        assert consumer.lanes_held() == [str(path)]
    finally:
        consumer.stop()
    later = Spool(path, MemorySink(), serializer="pickle")  # a reader of the right kind
    try:
        assert later.stats().backlog == 5
    finally:
        later.stop(drain=False)


def test_a_producers_handed_over_lanes_are_delivered_in_its_order(tmp_path: Path) -> None:
    """A producer-only spool hands over three lanes in turn; one consumer worker delivers
    all of them in put order (the lane with the oldest next record first), not lane by lane
    in turn."""
    path = tmp_path / "s"
    sink = MemorySink()
    consumer = Spool(path, sink, workers=1, batch_size=4, batch_interval=0)  # not started yet
    producer = Spool(path, None, consume=False)
    for part in range(3):
        producer.put_many(range(part * 10, part * 10 + 10))
        assert producer.flush()  # hands the lane over: the consumer holds the consumers' lock
    producer.stop()
    consumer.start()
    try:
        assert sink.wait_for(30, 30)
    finally:
        consumer.stop()
    assert [r.item for r in sink.records] == list(range(30))
