"""NatsBackend (the NATS JetStream backend) against a real ``nats-server -js`` started by the
suite; the tests mirror tests/test_backend_redis.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import pytest

from spoolkit import Spool
from spoolkit._internal.log import get_logger
from spoolkit.backends import Backend
from spoolkit.backends.base import Undecodable
from spoolkit.backends.nats import JetStreamMessage, NatsBackend
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ClosedError, ConfigError, PermanentError, TransientError
from spoolkit.spool.screen import screened
from spoolkit.spool.stats import Counters
from spoolkit.testing import MemorySink
from tests.helpers.collector import wait_for
from tests.helpers.consumer_logs import delivered, hung_batch, poll
from tests.services._common import free_port
from tests.services.nats_server import NatsServer

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent

Factory = Callable[..., NatsBackend]


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses."""
    return f"SPOOL{uuid.uuid4().hex[:12]}"


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def make(nats_url: str, stream: str) -> Iterator[Factory]:
    """Build NatsBackends on the test's stream (consumer ``g``); all are closed afterwards."""
    made: list[NatsBackend] = []

    def build(**kwargs: Any) -> NatsBackend:
        kwargs.setdefault("stream", stream)
        kwargs.setdefault("consumer", "g")
        backend = NatsBackend(nats_url, **kwargs)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def stream_state(url: str, stream: str) -> Any:
    """The stream's state (messages, first_seq, last_seq), read with a client of our own."""

    async def run() -> Any:
        nc = await nats.connect(url)
        try:
            return (await nc.jetstream().stream_info(stream)).state
        finally:
            await nc.close()

    return asyncio.run(run())


def take(
    backend: NatsBackend,
    n: int,
    within: float = 10.0,
    get: Callable[[int, float | None], Sequence[Any]] | None = None,
) -> list[JetStreamMessage]:
    """Take messages until ``n`` arrived or ``within`` seconds passed, through ``get`` (default
    the backend's ``get_batch``; a spool's screening one, say)."""
    get_batch = get or backend.get_batch
    got: list[JetStreamMessage] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        got += get_batch(n - len(got), 0.05)
    return got


def test_put_get_ack_round_trip(make: Factory, nats_url: str, stream: str) -> None:
    """put, put_many and put_durable land in the stream; ids are sequences; ack removes them."""
    b = make()
    assert isinstance(b, Backend)
    b.put("a", block=True, timeout=None)
    b.put_many(["b", {"c": 3}])
    rid = b.put_durable("d", block=True, timeout=None)
    assert b.backlog() == 4
    batch = b.get_batch(10, 1)
    assert [m.item for m in batch] == ["a", "b", {"c": 3}, "d"]
    ids = b.record_ids(batch)
    assert ids == ["1", "2", "3", "4"]
    assert ids[3] == rid
    assert [m.deliveries for m in batch] == [1, 1, 1, 1]
    assert b.backlog() == 4
    assert b.waiting() == 0
    b.ack(*batch)  # the server has the acks; the stream drops the messages moments later
    assert wait_for(lambda: b.backlog() == 0, 5)
    assert stream_state(nats_url, stream).messages == 0


def test_records_of_a_dead_consumer_are_delivered_again(make: Factory) -> None:
    """Records a process held unacknowledged come back after ack_wait, with the same ids."""
    dead = make(ack_wait=0.5)
    dead.put_many(range(5))
    held = take(dead, 5)  # never acked: the process "dies" holding them
    survivor = make(ack_wait=0.5)
    got = take(survivor, 5)
    assert [m.item for m in got] == [0, 1, 2, 3, 4]
    assert survivor.record_ids(got) == dead.record_ids(held)
    assert [m.deliveries for m in got] == [2] * 5
    survivor.ack(*got)
    assert wait_for(lambda: survivor.backlog() == 0, 5)


def test_close_releases_read_ahead_at_once(make: Factory) -> None:
    """Messages fetched ahead but not handed out go to others as soon as it closes (NAK)."""
    a = make()
    a.put_many(range(3))
    assert a.wait(1)  # fetches all three ahead
    a.close()
    with pytest.raises(ClosedError):
        a.get_batch(1, 0)
    b = make()  # ack_wait 60 s: only the NAK makes them deliverable within the test
    assert [m.item for m in take(b, 3, within=5)] == [0, 1, 2]


def acks_pending(url: str, stream: str, consumer: str) -> int:
    """Messages the consumer delivered that were not acknowledged yet."""

    async def run() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().consumer_info(stream, consumer)
            return int(info.num_ack_pending)
        finally:
            await nc.close()

    return asyncio.run(run())


def test_close_releases_what_arrived_after_a_fetch(
    make: Factory, nats_url: str, stream: str
) -> None:
    """Messages the server sent after a fetch stopped waiting (they sit in the queue of the
    client's pull subscription) are handed back at close too, not held for ack_wait."""
    a = make()
    assert a.wait(0.05) is False  # subscribed, nothing fetched
    a.put_many(range(3))
    js = a._stream  # a pull request answered after its fetch gave up waiting for it:

    async def answered_late() -> None:
        nc = await js.client()
        await nc.publish(js._next, b'{"batch": 3, "no_wait": true}', reply=f"{js._prefix}.0")

    a._stream.call(answered_late)
    assert wait_for(lambda: acks_pending(nats_url, stream, "g") == 3, 5)
    a.close()
    b = make()  # ack_wait 60 s: only the NAK makes them deliverable within the test
    assert [m.item for m in take(b, 3, within=5)] == [0, 1, 2]


def test_max_deliveries_goes_to_dead_letters(make: Factory, tmp_path: Path) -> None:
    """A record delivered more than max_deliveries times is dead-lettered, then acknowledged."""
    first = make(ack_wait=0.3, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    (held,) = take(first, 1)
    second = make(ack_wait=0.3, max_deliveries=1)
    dead = DeadLetters(tmp_path / "dead", second.decode, second.restore)
    screening = screened(second, dead, Counters(), get_logger())  # as a spool's workers take
    try:
        deadline = time.monotonic() + 10
        while second.backlog() and time.monotonic() < deadline:
            assert screening(5, 0.05) == []
        assert second.backlog() == 0
        (letter,) = dead.list()
        assert letter.record.id == held.record_id
        assert letter.record.item == "poison"
        assert letter.attempts == 2
        assert "max_deliveries=1" in letter.error.message
        assert letter.error.type == "spoolkit.errors.PermanentError"
        # requeued, it is a new message that keeps its record id
        assert dead.requeue() == 1
        (again,) = take(make(), 1)
        assert (again.record_id, again.item, again.deliveries) == (held.record_id, "poison", 1)
        assert again.seq != held.seq
    finally:
        dead.close()


def test_dead_letter_failure_leaves_the_record_pending(
    make: Factory, nats_url: str, stream: str
) -> None:
    """If the dead-letter store refuses the record, it is not acknowledged."""

    class Refusing:
        def add(self, entries: object) -> None:
            raise OSError("disk full")

    first = make(ack_wait=0.3, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    take(first, 1)
    second = make(ack_wait=0.3, max_deliveries=1)
    screening = screened(second, Refusing(), Counters(), get_logger())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        take(second, 1, get=screening)
    assert stream_state(nats_url, stream).messages == 1


def publish_raw(url: str, subject: str, data: bytes) -> None:
    """Publish ``data`` as is, with a client of our own (no headers)."""

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, data)
        finally:
            await nc.close()

    asyncio.run(run())


def test_over_delivered_and_undecodable_messages_are_handed_out(
    make: Factory, nats_url: str, stream: str
) -> None:
    """Every message fetched is handed out: one over max_deliveries with JetStream's count, one
    that cannot be decoded as an Undecodable item (counted); the spool decides what to
    dead-letter."""
    first = make(ack_wait=0.3, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    publish_raw(nats_url, f"spoolkit.{stream}", b"\x80 not pickle")
    held = take(first, 2)  # never acknowledged: "first" dies holding them
    assert first.undecodable == 1
    second = make(ack_wait=0.3, max_deliveries=1)
    got = take(second, 2)
    assert second.record_ids(got) == first.record_ids(held)
    assert [m.deliveries for m in got] == [2, 2]
    assert got[0].item == "poison"
    bad = got[1].item
    assert isinstance(bad, Undecodable)
    assert bad.describe()["data"] == repr(b"\x80 not pickle")
    assert second.undecodable == 1
    second.ack(*got)
    assert wait_for(lambda: second.backlog() == 0, 5)


def test_spool_dead_letters_records_over_max_deliveries(
    make: Factory, nats_url: str, stream: str, tmp_path: Path
) -> None:
    """Bound to a spool's dead letters, a record over max_deliveries never reaches the sink."""
    crashed = make(ack_wait=0.3)
    crashed.put("poison", block=True, timeout=None)
    take(crashed, 1)  # delivery 1, never acknowledged
    sink = MemorySink()
    url = f"{nats_url}?stream={stream}&consumer=g&ack_wait=0.3&max_deliveries=1"
    spool = Spool(tmp_path / "s", sink, backend=url)  # binds its dead letters by itself
    with spool:
        deadline = time.monotonic() + 10
        while not len(spool.dead_letters) and time.monotonic() < deadline:
            spool.flush(0.05)
        (letter,) = spool.dead_letters.list()
        assert letter.record.item == "poison"
        assert "max_deliveries=1" in letter.error.message
        assert spool.stats().backlog == 0
    assert sink.batches == []


def test_from_url_options(nats_url: str) -> None:
    """from_url reads the backend options from the query."""
    b = NatsBackend.from_url(
        f"{nats_url}?stream=s&subject=a.b&consumer=c&ack_wait=2.5&max_deliveries=3"
        "&serializer=json&timeout=3"
    )
    try:
        assert (b.stream, b.subject, b.consumer) == ("s", "a.b", "c")
        assert (b.ack_wait, b.max_deliveries, b.timeout) == (2.5, 3, 3.0)
        assert b.encode({"a": 1}) == b'{"a":1}'
    finally:
        b.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?stream=s&bogus=1", "unknown option 'bogus'.*ack_wait, max_deliveries"),
        ("", "lacks stream"),
        ("?stream=s&ack_wait=soon", "ack_wait must be a float"),
        ("?stream=s&max_deliveries=0", "max_deliveries must be >= 1"),
        ("?stream=s&serializer=yaml", "unknown serializer"),
        ("?stream=a.b", "stream must be"),
        ("?stream=s&subject=a.*", "subject must be a literal"),
    ],
)
def test_from_url_rejects_bad_options(nats_url: str, query: str, message: str) -> None:
    """Unknown, missing or malformed URL options raise ConfigError naming what is accepted."""
    with pytest.raises(ConfigError, match=message):
        NatsBackend.from_url(nats_url + query)


def test_nats_errors_are_mapped(make: Factory) -> None:
    """An unreachable server is a TransientError; the credentials never show."""
    down = NatsBackend(f"nats://app:pa55-Word@127.0.0.1:{free_port()}", stream="s", timeout=1)
    try:
        with pytest.raises(TransientError) as info:
            down.put("x", block=True, timeout=None)
        assert "pa55-Word" not in str(info.value)
        assert "app:***@" in repr(down)
        with pytest.raises(TransientError):
            down.wait(0.01)
    finally:
        down.close()


def test_a_subject_taken_by_another_stream_is_permanent(make: Factory, nats_url: str) -> None:
    """Publishing where another stream captures the subject: JetStream refuses, permanently."""
    other = make(stream=f"OTHER{uuid.uuid4().hex[:8]}", subject="shared.subject")
    other.put("x", block=True, timeout=None)
    mine = make(subject="shared.subject")  # its stream cannot be made on a taken subject
    with pytest.raises(PermanentError, match="overlap"):
        mine.put("y", block=True, timeout=None)


def test_spool_url_resolves_to_nats_backend(nats_url: str, stream: str, tmp_path: Path) -> None:
    """backend="nats://...?stream=" gives a NatsBackend; max_bytes and a bad URL are refused."""
    url = f"{nats_url}?stream={stream}"
    spool = Spool(tmp_path / "s", MemorySink(), backend=url)
    try:
        assert isinstance(spool._backend, NatsBackend)
    finally:
        spool.stop()
    with pytest.raises(ConfigError, match="max_bytes"):
        Spool(tmp_path / "t", MemorySink(), backend=url, max_bytes=10**6)
    with pytest.raises(ConfigError, match="lacks stream"):
        Spool(tmp_path / "u", MemorySink(), backend=nats_url)


def test_spool_delivers_through_nats(nats_url: str, stream: str, tmp_path: Path) -> None:
    """A Spool on the NATS backend delivers every record to its sink; stats add up."""
    sink = MemorySink()
    url = f"{nats_url}?stream={stream}"
    with Spool(tmp_path / "s", sink, backend=url, workers=2, batch_size=50) as spool:
        spool.put_many(range(300))
        for i in range(300, 320):
            spool.put(i)
        assert spool.flush(20)
        stats = spool.stats()
    got = sorted(r.item for batch in sink.batches for r in batch)
    assert got == list(range(320))
    assert stats.delivered == stats.enqueued == 320
    assert stats.backlog == 0
    assert stats.bytes_on_disk == 0
    ids = {r.id for batch in sink.batches for r in batch}
    assert ids == {str(n) for n in range(1, 321)}


def test_kill9_consumer_mid_batch_is_redelivered(
    nats_url: str, stream: str, tmp_path: Path
) -> None:
    """Two consumer processes; one is SIGKILLed mid-batch; every record is still delivered."""
    n = 2000
    url = f"{nats_url}?stream={stream}&ack_wait=1"
    producer = NatsBackend.from_url(url)
    producer.put_many(range(n))
    producer.close()
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    children: list[subprocess.Popen[bytes]] = []

    def consumer(name: str, log: Path, hang: str) -> subprocess.Popen[bytes]:
        # tests/_redis_child.py runs a Spool on any backend URL with a logging sink
        child = subprocess.Popen(
            [sys.executable, "-m", "tests._redis_child", url, str(tmp_path / name), str(log), hang],
            cwd=ROOT,
            stdin=subprocess.PIPE,
        )
        children.append(child)
        return child

    try:
        victim = consumer("v", logs[0], "3")
        hung = poll(lambda: hung_batch(logs[0]), within=20)
        consumer("s", logs[1], "-1")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        poll(lambda: stream_state(nats_url, stream).messages == 0 or None, within=30)
        got = {int(i) for log in logs for i in delivered(log)}
        assert got == set(range(n))
        assert set(hung) <= set(delivered(logs[1]))  # the batch it died in, via the survivor
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()  # the survivor stops cleanly
            if child.poll() is None:
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
