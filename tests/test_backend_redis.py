"""RedisBackend (the Redis Streams backend) against a real redis-server started by the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from spoolkit import Spool
from spoolkit._internal.log import get_logger
from spoolkit.backends import Backend
from spoolkit.backends.base import Undecodable
from spoolkit.backends.redis import RedisBackend, StreamMessage
from spoolkit.deadletter import DeadLetters
from spoolkit.errors import ClosedError, ConfigError, PermanentError, TransientError
from spoolkit.spool.screen import screened
from spoolkit.spool.stats import Counters
from spoolkit.testing import MemorySink
from tests.helpers.consumer_logs import delivered, hung_batch, poll
from tests.services._common import free_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent

Factory = Callable[..., RedisBackend]


@pytest.fixture
def stream() -> str:
    """A stream key no other test uses."""
    return f"spool-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client for looking at the server directly."""
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def make(redis_url: str, stream: str) -> Iterator[Factory]:
    """Build RedisBackends on the test's stream (group ``g``); all are closed afterwards."""
    made: list[RedisBackend] = []

    def build(**kwargs: Any) -> RedisBackend:
        kwargs.setdefault("stream", stream)
        kwargs.setdefault("group", "g")
        backend = RedisBackend(redis_url, **kwargs)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def take(
    backend: RedisBackend,
    n: int,
    within: float = 5.0,
    get: Callable[[int, float | None], Sequence[Any]] | None = None,
) -> list[StreamMessage]:
    """Take messages until ``n`` arrived or ``within`` seconds passed, through ``get`` (default
    the backend's ``get_batch``; a spool's screening one, say)."""
    get_batch = get or backend.get_batch
    got: list[StreamMessage] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        got += get_batch(n - len(got), 0.05)
    return got


def test_put_get_ack_round_trip(make: Factory, client: redis.Redis, stream: str) -> None:
    """put, put_many and put_durable land in the stream; ids are entry ids; ack removes them."""
    b = make()
    assert isinstance(b, Backend)
    b.put("a", block=True, timeout=None)
    b.put_many(["b", {"c": 3}])
    rid = b.put_durable("d", block=True, timeout=None)
    assert b.backlog() == 4
    batch = b.get_batch(10, 1)
    assert [m.item for m in batch] == ["a", "b", {"c": 3}, "d"]
    ids = b.record_ids(batch)
    assert ids[3] == rid
    assert ids == [e.decode() for e, _ in client.xrange(stream)]  # type: ignore[union-attr]
    assert [m.deliveries for m in batch] == [1, 1, 1, 1]
    assert b.backlog() == 4
    assert b.waiting() == 0
    b.ack(*batch)
    assert b.backlog() == 0
    assert client.xlen(stream) == 0
    assert client.xpending(stream, "g")["pending"] == 0


def test_records_of_a_dead_consumer_are_claimed(make: Factory) -> None:
    """Records pending at a consumer that went away are claimed after claim_idle, same ids."""
    dead = make(consumer="dead", claim_idle=0.05)
    dead.put_many(range(5))
    held = dead.get_batch(5, 1)  # never acked: the consumer "dies" holding them
    survivor = make(consumer="survivor", claim_idle=0.05)
    got = take(survivor, 5)
    assert [m.item for m in got] == [0, 1, 2, 3, 4]
    assert survivor.record_ids(got) == dead.record_ids(held)
    assert [m.deliveries for m in got] == [2] * 5
    survivor.ack(*got)
    assert survivor.backlog() == 0


def test_close_releases_read_ahead_at_once(make: Factory) -> None:
    """Messages read ahead but not handed out are claimable by others as soon as it closes."""
    a = make(consumer="a")
    a.put_many(range(3))
    assert a.wait(1)  # reads all three ahead
    a.close()
    with pytest.raises(ClosedError):
        a.get_batch(1, 0)
    b = make(consumer="b")  # claim_idle 60 s: only the released idle time makes them claimable
    assert [m.item for m in take(b, 3)] == [0, 1, 2]


def test_max_deliveries_goes_to_dead_letters(make: Factory, tmp_path: Path) -> None:
    """A record delivered more than max_deliveries times is dead-lettered, then acknowledged."""
    first = make(consumer="first", claim_idle=0.05, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    (held,) = first.get_batch(1, 1)
    second = make(consumer="second", claim_idle=0.05, max_deliveries=1)
    dead = DeadLetters(tmp_path / "dead", second.decode, second.restore)
    screening = screened(second, dead, Counters(), get_logger())  # as a spool's workers take
    try:
        deadline = time.monotonic() + 5
        while second.backlog() and time.monotonic() < deadline:
            assert screening(5, 0.05) == []
        assert second.backlog() == 0
        (letter,) = dead.list()
        assert letter.record.id == held.record_id
        assert letter.record.item == "poison"
        assert letter.attempts == 2
        assert "max_deliveries=1" in letter.error.message
        assert letter.error.type == "spoolkit.errors.PermanentError"
        # requeued, it is a new entry that keeps its record id
        assert dead.requeue() == 1
        (again,) = take(make(consumer="third"), 1)
        assert (again.record_id, again.item, again.deliveries) == (held.record_id, "poison", 1)
        assert again.entry_id != held.entry_id
    finally:
        dead.close()


def test_dead_letter_failure_leaves_the_record_pending(
    make: Factory, client: redis.Redis, stream: str
) -> None:
    """If the dead-letter store refuses the record, it is not acknowledged."""

    class Refusing:
        def add(self, entries: object) -> None:
            raise OSError("disk full")

    first = make(consumer="first", claim_idle=0.05, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    first.get_batch(1, 1)
    second = make(consumer="second", claim_idle=0.05, max_deliveries=1)
    screening = screened(second, Refusing(), Counters(), get_logger())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        take(second, 1, get=screening)
    assert client.xlen(stream) == 1
    assert client.xpending(stream, "g")["pending"] == 1


def test_over_delivered_and_undecodable_entries_are_handed_out(
    make: Factory, client: redis.Redis, stream: str
) -> None:
    """Every entry read is handed out: one over max_deliveries with Redis's count, one that
    cannot be decoded as an Undecodable item (counted); the spool decides what to dead-letter."""
    first = make(consumer="first", claim_idle=0.05, max_deliveries=1)
    first.put("poison", block=True, timeout=None)
    client.xadd(stream, {"d": b"\x80 not pickle", "t": "1.5"})
    held = take(first, 2)  # never acknowledged: "first" dies holding them
    assert first.undecodable == 1
    second = make(consumer="second", claim_idle=0.05, max_deliveries=1)
    got = take(second, 2)
    assert second.record_ids(got) == first.record_ids(held)
    assert [m.deliveries for m in got] == [2, 2]
    assert got[0].item == "poison"
    bad = got[1].item
    assert isinstance(bad, Undecodable)
    assert bad.describe() == {"d": repr(b"\x80 not pickle"), "t": repr(b"1.5")}
    assert got[1].enqueued_at == 1.5
    assert second.undecodable == 1
    second.ack(*got)
    assert client.xlen(stream) == 0


def test_spool_dead_letters_records_over_max_deliveries(
    make: Factory, redis_url: str, stream: str, tmp_path: Path
) -> None:
    """Bound to a spool's dead letters, a record over max_deliveries never reaches the sink."""
    make(consumer="crashed", claim_idle=0.05).put("poison", block=True, timeout=None)
    make(consumer="crashed").get_batch(1, 1)  # delivery 1, never acknowledged
    sink = MemorySink()
    url = f"{redis_url}?stream={stream}&group=g&claim_idle=0.05&max_deliveries=1"
    spool = Spool(tmp_path / "s", sink, backend=url)  # binds its dead letters by itself
    with spool:
        deadline = time.monotonic() + 5
        while not len(spool.dead_letters) and time.monotonic() < deadline:
            spool.flush(0.05)
        (letter,) = spool.dead_letters.list()
        assert letter.record.item == "poison"
        assert "max_deliveries=1" in letter.error.message
        assert spool.stats().backlog == 0
    assert sink.batches == []


def test_from_url_options(redis_url: str) -> None:
    """from_url reads the backend options from the query and leaves redis-py's to the client."""
    b = RedisBackend.from_url(
        f"{redis_url}?stream=s&group=g&consumer=c&claim_idle=2.5&max_deliveries=3&maxlen=100"
        "&serializer=json&socket_timeout=3"
    )
    try:
        assert (b.stream, b.group, b.consumer) == ("s", "g", "c")
        assert (b.claim_idle, b.max_deliveries, b.maxlen) == (2.5, 3, 100)
        assert b.encode({"a": 1}) == b'{"a":1}'
        assert b.client.get_connection_kwargs()["socket_timeout"] == 3.0
    finally:
        b.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?stream=s&group=g&bogus=1", "unknown option 'bogus'.*claim_idle, max_deliveries"),
        ("?stream=s", "lacks group"),
        ("", "lacks stream and group"),
        ("?stream=s&group=g&claim_idle=soon", "claim_idle must be a float"),
        ("?stream=s&group=g&max_deliveries=0", "max_deliveries must be >= 1"),
        ("?stream=s&group=g&serializer=yaml", "unknown serializer"),
    ],
)
def test_from_url_rejects_bad_options(redis_url: str, query: str, message: str) -> None:
    """Unknown, missing or malformed URL options raise ConfigError naming what is accepted."""
    with pytest.raises(ConfigError, match=message):
        RedisBackend.from_url(redis_url + query)


def test_client_with_decoded_responses_is_refused() -> None:
    """A client with decode_responses=True cannot carry binary payloads: ConfigError."""
    c = redis.Redis(decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisBackend(c, stream="s", group="g")


def test_redis_errors_are_mapped(make: Factory, client: redis.Redis, stream: str) -> None:
    """An unreachable server is a TransientError; a key of another type a PermanentError."""
    down = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", stream="s", group="g")
    try:
        with pytest.raises(TransientError) as info:
            down.put("x", block=True, timeout=None)
        assert isinstance(info.value.__cause__, redis.ConnectionError)
        with pytest.raises(TransientError):
            down.wait(0.01)
    finally:
        down.close()
    client.set(stream, "not a stream")
    with pytest.raises(PermanentError, match="WRONGTYPE"):
        make().put("x", block=True, timeout=None)


def test_spool_url_resolves_to_redis_backend(redis_url: str, stream: str, tmp_path: Path) -> None:
    """backend="redis://...?stream=&group=" gives a RedisBackend; max_bytes is refused."""
    url = f"{redis_url}?stream={stream}&group=g"
    spool = Spool(tmp_path / "s", MemorySink(), backend=url)
    try:
        assert isinstance(spool._backend, RedisBackend)
    finally:
        spool.stop()
    with pytest.raises(ConfigError, match="maxlen"):
        Spool(tmp_path / "t", MemorySink(), backend=url, max_bytes=10**6)


def test_spool_delivers_through_redis(redis_url: str, stream: str, tmp_path: Path) -> None:
    """A Spool on the Redis backend delivers every record to its sink; stats add up."""
    sink = MemorySink()
    url = f"{redis_url}?stream={stream}&group=g"
    with Spool(tmp_path / "s", sink, backend=url, workers=2, batch_size=50) as spool:
        spool.put_many(range(300))
        for i in range(300, 320):
            spool.put(i)
        assert spool.flush(10)
        stats = spool.stats()
    got = sorted(r.item for batch in sink.batches for r in batch)
    assert got == list(range(320))
    assert stats.delivered == stats.enqueued == 320
    assert stats.backlog == 0
    assert stats.bytes_on_disk == 0
    ids = {r.id for batch in sink.batches for r in batch}
    assert len(ids) == 320
    assert all("-" in i for i in ids)


def test_kill9_consumer_mid_batch_survivor_claims(
    redis_url: str, stream: str, tmp_path: Path, client: redis.Redis
) -> None:
    """Two consumer processes; one is SIGKILLed mid-batch; every record is still delivered."""
    n = 2000
    url = f"{redis_url}?stream={stream}&group=g&claim_idle=0.5"
    producer = RedisBackend.from_url(url)
    producer.put_many(range(n))
    producer.close()
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    children: list[subprocess.Popen[bytes]] = []

    def consumer(name: str, log: Path, hang: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests._redis_child", url, str(tmp_path / name), str(log), hang],
            cwd=ROOT,
            stdin=subprocess.PIPE,
        )
        children.append(child)
        return child

    try:
        # The victim runs alone until it hangs in its fourth batch: started together, the
        # survivor could take every record before the victim got that far.
        victim = consumer("v", logs[0], "3")
        hung = poll(lambda: hung_batch(logs[0]), within=15)
        consumer("s", logs[1], "-1")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        poll(lambda: client.xlen(stream) == 0 or None, within=15)
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


def test_flush_waits_for_every_entry_after_the_clock_stepped_back(
    tmp_path: Path, redis_url: str
) -> None:
    """flush() on a Redis-backed spool with records stamped an hour ahead (the wall clock
    stepped back after them) returns True only once all of them reached the sink: it waits
    for the stream's entries up to the newest at the call to be settled, not for timestamps."""
    import datetime as dt
    import threading

    from freezegun import freeze_time

    gate = threading.Semaphore(0)
    delivered: list[Any] = []

    def sink(batch: Any) -> None:
        assert gate.acquire(timeout=30)
        delivered.extend(r.item for r in batch)

    url = f"{redis_url}?stream=flush-{uuid.uuid4().hex}&group=g"
    with Spool(tmp_path / "s", sink, backend=url, workers=1, batch_size=1) as spool:
        with freeze_time(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), tick=True):
            spool.put_many(range(20))
        result: list[tuple[bool, int]] = []
        waiter = threading.Thread(target=lambda: result.append((spool.flush(30), len(delivered))))
        waiter.start()
        for n in range(1, 21):  # one record at a time: a flush that ends early is seen ending
            gate.release()
            deadline = time.monotonic() + 30
            while len(delivered) < n and not result and time.monotonic() < deadline:
                time.sleep(0.005)  # a poll of a predicate, not a wait for an outcome
            if result:
                break
        waiter.join(30)
        assert result == [(True, 20)]
