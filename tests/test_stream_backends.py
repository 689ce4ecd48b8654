"""What the Redis Streams and NATS JetStream backends promise alike, each against a real
server started by the suite (redis-server, ``nats-server -js``). What differs between them
(their URLs, their errors, how a dead consumer's records come back) is tested in
tests/test_backend_redis.py and tests/test_backend_nats.py."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolkit import RetryPolicy, Spool
from spoolkit.errors import ConfigError, PermanentError
from spoolkit.testing import FakeClock, FlakySink, MemorySink

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent

Factory = Callable[..., Any]


@pytest.fixture(params=["redis", "nats"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses (valid for Redis and JetStream alike)."""
    return f"SPOOL{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("nats_server").url)


@pytest.fixture
def spool_url(kind: str, server_url: str, stream: str) -> str:
    """The ``backend=`` URL of a spool on the test's stream (group or consumer ``g``)."""
    return f"{server_url}?stream={stream}" + ("&group=g" if kind == "redis" else "")


@pytest.fixture
def make(kind: str, server_url: str, stream: str) -> Iterator[Factory]:
    """Build backends of ``kind`` on the test's stream (group or consumer ``g``); all are
    closed afterwards."""
    made: list[Any] = []

    def build(**kwargs: Any) -> Any:
        kwargs.setdefault("stream", stream)
        if kind == "redis":
            from spoolkit.backends.redis import RedisBackend

            kwargs.setdefault("group", "g")
            backend: Any = RedisBackend(server_url, **kwargs)
        else:
            from spoolkit.backends.nats import NatsBackend

            kwargs.setdefault("consumer", "g")
            backend = NatsBackend(server_url, **kwargs)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def take(backend: Any, n: int, within: float = 10.0) -> list[Any]:
    """Take messages until ``n`` arrived or ``within`` seconds passed (a JetStream fetch may
    return fewer than are there)."""
    got: list[Any] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        got += backend.get_batch(n - len(got), 0.05)
    return got


@pytest.mark.parametrize("extra", ["redis", "nats"])
def test_import_spoolkit_backends_does_not_load_the_driver(extra: str) -> None:
    """`import spoolkit.backends` leaves the driver unloaded; without it the error names the
    extra."""
    code = (
        "import sys, spoolkit, spoolkit.backends\n"
        f"assert {extra!r} not in sys.modules, '{extra} was imported'\n"
        f"sys.modules[{extra!r}] = None\n"
        "try:\n"
        f"    import spoolkit.backends.{extra}\n"
        "except ImportError as e:\n"
        f"    assert \"pip install 'spoolkit[{extra}]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_nacked_messages_come_back_first(make: Factory) -> None:
    """nack hands messages out again, before newer ones, with the same record ids."""
    b = make()
    b.put_many(range(5))
    first = b.get_batch(3, 1)
    b.nack(*first)
    again = take(b, 5)
    assert [m.item for m in again] == [0, 1, 2, 3, 4]
    assert b.record_ids(again[:3]) == b.record_ids(first)


def test_wait_and_oldest_enqueued_at(make: Factory) -> None:
    """wait is False on an empty stream, True once a record waits; oldest is its put time."""
    b = make()
    assert b.wait(0.05) is False
    assert b.oldest_enqueued_at() is None
    before = time.time()
    make().put("x", block=True, timeout=None)
    oldest = b.oldest_enqueued_at()
    assert oldest is not None
    assert before <= oldest <= time.time()
    assert b.wait(2) is True
    assert b.get_batch(5, 0)[0].item == "x"
    assert b.oldest_enqueued_at() is None


def test_puts_counts_what_was_stored(make: Factory) -> None:
    """puts counts put, put_durable and put_many records; a restored dead letter is not one."""
    b = make()
    b.put("a", block=True, timeout=None)
    rid = b.put_durable("b", block=True, timeout=None)
    b.put_many(["c", "d"])
    b.restore(b.encode("e"), rid, 1.0)
    assert b.puts == 4
    with pytest.raises(ConfigError, match="not issued"):
        b.restore(b"x", "lane-0123-7", 1.0)


def test_spool_retries_and_dead_letters(spool_url: str, tmp_path: Path) -> None:
    """Retries happen in place; a permanently failing batch lands in the local dead letters,
    and a requeue delivers it under its old id."""
    flaky = FlakySink(pattern=[True, True])
    retry = RetryPolicy(max_attempts=5, initial_wait=1, jitter=0)
    with Spool(tmp_path / "a", flaky, backend=spool_url, retry=retry, clock=FakeClock()) as spool:
        spool.put_many(["x", "y"])
        assert spool.flush(10)
        assert spool.stats().retried == 4
    assert [r.item for b in flaky.inner.batches for r in b] == ["x", "y"]

    failing = FlakySink(pattern=[PermanentError("no")])
    with Spool(tmp_path / "b", failing, backend=spool_url) as spool:
        spool.put("z")
        assert spool.flush(10)
        (letter,) = spool.dead_letters.list()
        assert letter.record.item == "z"
        assert spool.dead_letters.requeue() == 1
        assert spool.flush(10)
    (batch,) = failing.inner.batches
    assert [(r.id, r.item) for r in batch] == [(letter.id, "z")]


def test_two_spools_share_the_stream(spool_url: str, tmp_path: Path) -> None:
    """Two spools on one group (consumer) split the records between them; each is delivered
    once."""
    sinks = [MemorySink(), MemorySink()]
    spools = [
        Spool(
            tmp_path / str(i), sink, backend=spool_url, workers=1, batch_size=10, batch_interval=0
        )
        for i, sink in enumerate(sinks)
    ]
    for spool in spools:
        spool.start()
    try:
        spools[0].put_many(range(500))
        deadline = time.monotonic() + 20
        while sum(s.stats().delivered for s in spools) < 500 and time.monotonic() < deadline:
            spools[0].flush(0.1)
    finally:
        for spool in spools:
            spool.stop()
    got = [r.item for sink in sinks for batch in sink.batches for r in batch]
    assert sorted(got) == list(range(500))
