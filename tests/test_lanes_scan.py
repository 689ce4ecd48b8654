"""What a consuming Spool does with lanes it finds while it runs: unreadable ones are left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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


def test_a_lane_let_go_empty_is_marked_idle_and_scans_do_not_open_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane closed with nothing in it carries an ``idle`` mark, and a consumer looking for
    lanes to adopt skips it without opening it (no open, no fsync every 0.5 s)."""
    path = tmp_path / "s"
    consumer = Spool(path, MemorySink())  # the root lane
    Spool(path, MemorySink()).stop()  # lanes/1, let go empty
    lane = path / "lanes" / "1"
    assert (lane / "idle").exists()
    opened: list[str] = []
    backend = consumer._backend
    real = backend._open_lane  # type: ignore[attr-defined]

    def counting(p: str) -> Any:
        opened.append(p)
        return real(p)

    monkeypatch.setattr(backend, "_open_lane", counting)
    try:
        backend.adopt()  # type: ignore[attr-defined]
        assert opened == []
    finally:
        consumer.stop(drain=False)


def test_a_lane_written_again_loses_its_idle_mark_and_is_adopted(tmp_path: Path) -> None:
    """Whoever opens an idle lane removes the mark first: records written there later are
    found and adopted by the next consumer."""
    path = tmp_path / "s"
    Spool(path, MemorySink()).stop()  # the root lane, let go empty
    assert (path / "idle").exists()
    writer = Spool(path, None, consume=False)  # takes the root lane again
    assert not (path / "idle").exists()
    writer.put_many(range(5))
    writer.stop()  # lets it go with 5 records: no mark
    assert not (path / "idle").exists()
    sink = MemorySink()
    consumer = Spool(path, sink, batch_interval=0)
    try:
        assert consumer.stats().backlog == 5
        consumer.start()
        assert sink.wait_for(5, 30)
    finally:
        consumer.stop()
