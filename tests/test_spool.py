"""Spool core: put, flush, stop, the context manager, sinks, records, ordering, stats."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Record, RetryPolicy, Spool, SpoolStats
from spoolkit.backends import Backend
from spoolkit.backends.disk import DiskBackend
from spoolkit.errors import ClosedError, ConfigError, TransientError
from spoolkit.testing import FakeClock, FlakySink, MemorySink
from tests.helpers import BlockingSink, spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)


def test_put_then_flush_delivers_every_item(make_spool: Any) -> None:
    """Every put item reaches the sink once flush returns True."""
    sink = MemorySink()
    with make_spool(sink, workers=2, batch_size=7) as spool:
        for i in range(100):
            spool.put(i)
        spool.put_many(range(100, 150))
        assert spool.flush(10)
    assert sorted(sink.items) == list(range(150))


def test_records_carry_unique_ids_times_and_attempts(make_spool: Any) -> None:
    """Records have unique ids '<uid>-<n>', an enqueued_at and attempts=1 on first delivery."""
    sink = MemorySink()
    with make_spool(sink) as spool:
        spool.put_many(["a", "b", "c"])
        assert spool.flush(10)
    records = sink.records
    assert len({r.id for r in records}) == 3
    assert all(isinstance(r, Record) and r.attempts == 1 for r in records)
    assert all(r.id.rsplit("-", 1)[1].isdigit() and len(r.id.split("-")[0]) == 32 for r in records)
    assert all(r.enqueued_at > 0 for r in records)


def test_record_id_is_stable_across_retries(make_spool: Any) -> None:
    """A retried record keeps its id and its attempts count goes up."""
    sink = FlakySink(pattern=[True])
    with make_spool(sink, retry=RetryPolicy(jitter=0), clock=FakeClock(), workers=1) as spool:
        spool.put("x")
        assert spool.flush(10)
    assert [r.attempts for r in sink.records] == [2]
    assert sink.calls == 2


def test_record_id_is_stable_across_restarts(make_spool: Any) -> None:
    """A record in flight when the spool stops is delivered by the next one under the same id."""
    sink = BlockingSink()
    first = make_spool(sink, workers=1)
    first.start()
    first.put("x")
    assert sink.entered.wait(10)
    assert first.stop(drain=False, timeout=0.05) is False  # the sink call is abandoned
    sink.release.set()
    second_sink = MemorySink()
    with make_spool(second_sink) as spool:
        assert spool.flush(10)
    assert [r.id for r in second_sink.records] == [sink.batches[0][0].id]


def test_flush_times_out_while_the_sink_holds_records(make_spool: Any) -> None:
    """flush returns False on timeout while a batch is in flight, True once it is delivered."""
    sink = BlockingSink()
    spool = make_spool(sink, workers=1)
    spool.start()
    spool.put("x")
    assert sink.entered.wait(10)
    assert spool.flush(0.05) is False
    sink.release.set()
    assert spool.flush(10) is True


def test_flush_includes_the_backlog_recovered_from_disk(make_spool: Any, tmp_path: Path) -> None:
    """Records stored by an earlier spool on the same path are delivered before flush is True."""
    old = make_spool(MemorySink())
    old.put_many(range(20))
    old.stop()
    sink = MemorySink()
    spool = make_spool(sink)
    assert spool.stats().backlog == 20
    with spool:
        assert spool.flush(10)
    assert sorted(sink.items) == list(range(20))


def test_flush_without_workers(make_spool: Any) -> None:
    """Not started, flush is True on an empty spool and False when records wait."""
    spool = make_spool(MemorySink())
    assert spool.flush(0) is True
    spool.put(1)
    assert spool.flush(0.01) is False


def test_flush_does_not_wait_for_later_records(make_spool: Any) -> None:
    """flush is about the records present at the call, not those put afterwards."""
    sink = MemorySink()
    gate = threading.Event()

    def write(batch: Sequence[Record]) -> None:
        if any(r.item == "late" for r in batch):
            gate.wait(30)
        sink.write(batch)

    with make_spool(write, workers=2, batch_size=1) as spool:
        spool.put("early")
        assert spool.flush(10)
        spool.put("late")
        spool.put("other")
        gate.set()
        assert spool.flush(10)


def test_stop_drains_by_default(make_spool: Any) -> None:
    """stop() delivers what is waiting before releasing the directory."""
    sink = MemorySink()
    spool = make_spool(sink, batch_size=3)
    spool.start()
    spool.put_many(range(30))
    assert spool.stop() is True
    assert sorted(sink.items) == list(range(30))


def test_stop_without_drain_keeps_records_on_disk(make_spool: Any) -> None:
    """stop(drain=False) leaves waiting records for the next spool on the path."""
    spool = make_spool(MemorySink())
    spool.put_many(range(5))
    spool.stop(drain=False)
    sink = MemorySink()
    with make_spool(sink) as again:
        assert again.flush(10)
    assert sorted(sink.items) == list(range(5))


def test_stopped_spool_refuses_records_and_restart(make_spool: Any) -> None:
    """put, put_many and start raise ClosedError after stop; stop twice is harmless."""
    spool = make_spool(MemorySink())
    spool.start()
    spool.stop()
    with pytest.raises(ClosedError):
        spool.put(1)
    with pytest.raises(ClosedError):
        spool.put_many([1])
    with pytest.raises(ClosedError):
        spool.start()
    assert spool.stop() is True


def test_context_manager_opens_and_closes_the_sink(make_spool: Any) -> None:
    """Entering starts the spool (sink.open), leaving stops it (sink.close), once each."""
    sink = MemorySink()
    with make_spool(sink) as spool:
        spool.start()  # idempotent
        assert sink.opened == 1
        spool.put(1)
    assert (sink.opened, sink.closed) == (1, 1)
    assert sink.items == [1]


def test_plain_callable_is_a_sink(make_spool: Any) -> None:
    """A function taking the batch is accepted as the sink."""
    seen: list[Any] = []
    with make_spool(lambda batch: seen.extend(r.item for r in batch)) as spool:
        spool.put("hi")
        assert spool.flush(10)
    assert seen == ["hi"]


def test_sink_protocol_is_runtime_checkable() -> None:
    """MemorySink satisfies the Sink protocol."""
    from spoolkit import Sink

    assert isinstance(MemorySink(), Sink)


def test_put_does_not_wait_for_a_stuck_sink(make_spool: Any) -> None:
    """Producers keep putting while every worker is inside a blocked sink call."""
    sink = BlockingSink()
    with make_spool(sink, workers=1) as spool:
        spool.put(0)
        assert sink.entered.wait(10)
        for i in range(1, 2001):
            spool.put(i)
        assert spool.stats().enqueued == 2001
        sink.release.set()
        assert spool.flush(10)


def test_acknowledged_only_after_the_sink_returned(make_spool: Any) -> None:
    """While the sink has not returned, the record stays in the backlog."""
    sink = BlockingSink()
    with make_spool(sink, workers=1) as spool:
        spool.put("x")
        assert sink.entered.wait(10)
        assert spool.stats().backlog == 1
        sink.release.set()
        assert spool.flush(10)
        assert spool.stats().backlog == 0


def test_one_worker_keeps_put_order_through_retries(make_spool: Any) -> None:
    """With workers=1 records arrive in put order; a failing batch holds back later ones."""
    sink = FlakySink(0.4, seed=3)
    retry = RetryPolicy(max_attempts=50, jitter=0)
    with make_spool(sink, workers=1, batch_size=4, retry=retry, clock=FakeClock()) as spool:
        spool.put_many(range(200))
        assert spool.flush(20)
    assert sink.failures > 10
    assert [r.item for r in sink.records] == list(range(200))


def test_many_workers_keep_order_within_a_batch(make_spool: Any) -> None:
    """With several workers each batch is still in put order."""
    sink = MemorySink()
    with make_spool(sink, workers=4, batch_size=16) as spool:
        spool.put_many(range(2000))
        assert spool.flush(20)
    assert sorted(sink.items) == list(range(2000))
    for batch in sink.batches:
        items = [r.item for r in batch]
        assert items == sorted(items)


def test_stats_snapshot(make_spool: Any) -> None:
    """stats() returns a typed snapshot with counters and gauges."""
    sink = FlakySink(pattern=[True])
    with make_spool(sink, retry=RetryPolicy(jitter=0), clock=FakeClock(), workers=1) as spool:
        spool.put_many(["a", "b"])
        assert spool.flush(10)
        stats = spool.stats()
    assert isinstance(stats, SpoolStats)
    assert (stats.enqueued, stats.delivered, stats.retried, stats.dead_lettered) == (2, 2, 2, 0)
    assert (stats.dropped, stats.backlog, stats.worker_restarts) == (0, 0, 0)
    assert stats.bytes_on_disk > 0
    assert stats.oldest_age == 0.0
    assert stats.last_error is not None
    assert "TransientError" in stats.last_error


def test_stats_oldest_age_uses_the_enqueue_time(make_spool: Any) -> None:
    """oldest_age grows with the age of the oldest waiting record (freezegun)."""
    from freezegun import freeze_time

    spool = make_spool(MemorySink())
    with freeze_time("2030-01-01 00:00:00") as frozen:
        spool.put("x")
        frozen.tick(42)
        assert spool.stats().oldest_age == pytest.approx(42)


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"batch_size": 0},
        {"batch_interval": -1},
        {"when_full": "explode"},
        {"sink_timeout": 0},
        {"retry": "often"},
        {"backend": "redis://localhost:6379/0"},
        {"backend": "ftp://example.com"},
        {"backend": object()},
    ],
)
def test_bad_options_raise_config_error(tmp_path: Path, options: dict[str, Any]) -> None:
    """Invalid options raise ConfigError before anything starts."""
    with pytest.raises(ConfigError):
        Spool(tmp_path / "s", MemorySink(), **options)


def test_a_sink_must_be_writable(tmp_path: Path) -> None:
    """An object that has no write() and is not callable is refused."""
    with pytest.raises(ConfigError):
        Spool(tmp_path / "s", object())


def test_backend_object_is_used(make_spool: Any, tmp_path: Path) -> None:
    """A Backend object passed as backend= is what the spool stores records in."""
    backend = DiskBackend(tmp_path / "elsewhere")
    assert isinstance(backend, Backend)
    sink = MemorySink()
    with make_spool(sink, backend=backend) as spool:
        spool.put("x")
        assert backend.backlog() >= 0
        assert spool.flush(10)
    assert sink.items == ["x"]
    assert spool.path == backend.path


def test_no_sink_dead_letters_data_records(make_spool: Any) -> None:
    """With sink=None, data records go to the dead letters, not lost."""
    with make_spool(None) as spool:
        spool.put("orphan")
        assert spool.flush(10)
        [letter] = spool.dead_letters.list()
    assert letter.record.item == "orphan"
    assert "no sink" in letter.error.message


def test_logging_goes_to_the_stdlib_logger(
    make_spool: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events reach the stdlib 'spoolkit' logger with their fields; nothing goes to stdout."""
    caplog.set_level(logging.INFO, logger="spoolkit")
    sink = FlakySink(pattern=[TransientError("down")])
    with make_spool(sink, retry=RetryPolicy(jitter=0), clock=FakeClock()) as spool:
        spool.put(1)
        assert spool.flush(10)
    events = [getattr(r, "spoolkit", {}).get("event") for r in caplog.records]
    assert "batch_retry" in events
    assert "spool_started" in events
    retry = next(r for r in caplog.records if r.spoolkit["event"] == "batch_retry")  # type: ignore[attr-defined]
    assert retry.name == "spoolkit"
    assert retry.spoolkit["spool"] == spool.path  # type: ignore[attr-defined]
    assert capsys.readouterr().out == ""


def test_enqueued_counts_every_put_put_many_and_deferred_call(tmp_path: Path) -> None:
    """stats().enqueued counts puts, put_many items and deferred calls once each, from
    several threads, and restarts at 0 for a new Spool on the same path."""
    spool = Spool(tmp_path / "s", MemorySink(), workers=1)

    @spool.deferred
    def call(x: int) -> None:
        """A deferred call."""

    def putter(_i: int) -> None:
        for n in range(250):
            spool.put(n)

    threads = [threading.Thread(target=putter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spool.put_many(range(10))
    call(1)
    assert spool.stats().enqueued == 4 * 250 + 10 + 1
    spool.stop(drain=False)
    again = Spool(tmp_path / "s", MemorySink(), workers=1)
    assert again.stats().enqueued == 0
    again.stop(drain=False)


def test_an_unknown_backend_string_names_every_accepted_form(tmp_path: Path) -> None:
    """A mistyped backend URL is a ConfigError listing None/'disk', redis:// URLs and objects."""
    with pytest.raises(ConfigError) as info:
        Spool(tmp_path, None, backend="redsi://localhost/0?stream=s&group=g")
    message = str(info.value)
    assert "'disk'" in message
    assert "redis://" in message
    assert "spoolkit.backends.Backend" in message


@pytest.mark.parametrize(
    ("serializer", "fsync", "name", "cheap"),
    [("json", "interval", "json", True), ("pickle", "always", "pickle", False)],
)
def test_serializer_name_and_cheap_puts_describe_the_spool(
    tmp_path: Path, serializer: str, fsync: str, name: str, cheap: bool
) -> None:
    """serializer_name names the stored form; cheap_puts is True for the disk lanes unless
    every put is fsynced (then a put waits on the disk)."""
    spool = Spool(tmp_path, MemorySink(), serializer=serializer, fsync=fsync)
    assert spool.serializer_name == name
    assert spool.cheap_puts is cheap
    spool.stop(drain=False)
