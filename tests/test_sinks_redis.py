"""RedisStreamSink against a real redis-server started by the suite."""

from __future__ import annotations

import inspect
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.exceptions

from spoolkit.errors import ConfigError, PartialFailure, PermanentError, SinkError, TransientError
from spoolkit.sinks import RedisStreamSink
from spoolkit.sinks.redis import map_redis_error
from spoolkit.typing import Record
from tests.helpers import closing_factory
from tests.services._common import free_port
from tests.services.redis_server import RedisServer

pytestmark = pytest.mark.services


def records(n: int, start: int = 0) -> list[Record]:
    return [Record(f"r{i}", {"n": i}, 1700000000.5 + i) for i in range(start, start + n)]


@pytest.fixture
def stream() -> str:
    """A stream key no other test uses."""
    return f"ev-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client for checking what landed in the server."""
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def sink_factory() -> Iterator[Callable[..., RedisStreamSink]]:
    """Build RedisStreamSinks that are closed after the test."""
    with closing_factory(RedisStreamSink) as make:
        yield make


def entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(stream)]  # type: ignore[union-attr]


def test_each_record_is_one_stream_entry(
    redis_url: str, client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """XADD writes fields id, enqueued_at and item (JSON), in batch order."""
    sink = sink_factory(redis_url, stream)
    sink.open()
    sink.write(records(2))
    sink.write(records(1, start=2))
    got = entries(client, stream)
    assert [e["id"] for e in got] == ["r0", "r1", "r2"]
    assert got[0] == {"id": "r0", "enqueued_at": "1700000000.5", "item": '{"n":0}'}
    assert [json.loads(e["item"])["n"] for e in got] == [0, 1, 2]


def test_maxlen_trims_the_stream(
    redis_url: str, client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """maxlen with approximate=False keeps exactly the newest N entries."""
    sink = sink_factory(redis_url, stream, maxlen=5, approximate=False)
    for i in range(4):
        sink.write(records(3, start=i * 3))
    assert [e["id"] for e in entries(client, stream)] == [f"r{i}" for i in range(7, 12)]


def test_a_client_passed_in_is_used_and_left_open(
    client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """A redis.Redis given to the sink is used as is and not closed by close()."""
    sink = sink_factory(client, stream)
    sink.write(records(1))
    sink.close()
    assert client.ping()
    assert entries(client, stream)[0]["id"] == "r0"
    assert "<client>" in repr(sink)


def test_wrong_key_type_is_permanent(
    redis_url: str, client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """XADD on a key holding a string fails with WRONGTYPE: PermanentError."""
    client.set(stream, "not a stream")
    sink = sink_factory(redis_url, stream)
    with pytest.raises(PermanentError, match="WRONGTYPE") as info:
        sink.write(records(2))
    assert isinstance(info.value.__cause__, redis.ResponseError)


def test_unreachable_server_is_transient(
    stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """Nothing listening: TransientError; the password is masked in repr and message."""
    sink = sink_factory(f"redis://:pw-SECRET@127.0.0.1:{free_port()}/0", stream)
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert "pw-SECRET" not in str(info.value)
    assert "pw-SECRET" not in repr(sink)


def test_open_does_not_need_the_server(
    stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """open() with the server down succeeds (the spool can buffer); the write is transient."""
    sink = sink_factory(f"redis://127.0.0.1:{free_port()}/0", stream)
    sink.open()
    with pytest.raises(TransientError):
        sink.write(records(1))


def test_stopped_server_is_transient_then_recovers(
    redis_server_factory: Callable[[], RedisServer],
    stream: str,
    sink_factory: Callable[..., RedisStreamSink],
) -> None:
    """A second, independent server is stopped: writes are transient; after restart they land."""
    server = redis_server_factory()
    sink = sink_factory(server.url, stream)
    sink.write(records(1))
    server.stop()
    with pytest.raises(TransientError):
        sink.write(records(1, start=1))
    server.start()  # same port; the data is gone (no persistence)
    sink.write(records(1, start=2))
    check = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert [e["id"] for e in entries(check, stream)] == ["r2"]
    finally:
        check.close()


def test_concurrent_writers_keep_batches_whole(
    redis_url: str, client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """Threads sharing a sink: every record lands once and each batch stays contiguous."""
    sink = sink_factory(redis_url, stream)

    def work(k: int) -> None:
        for j in range(10):
            sink.write(records(4, start=(k * 10 + j) * 4))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [int(e["id"][1:]) for e in entries(client, stream)]
    assert sorted(ids) == list(range(6 * 10 * 4))
    for i in range(0, len(ids), 4):  # MULTI/EXEC: a batch is never interleaved with another
        assert ids[i : i + 4] == list(range(ids[i], ids[i] + 4))


def test_unencodable_item_fails_alone(
    redis_url: str, client: redis.Redis, stream: str, sink_factory: Callable[..., RedisStreamSink]
) -> None:
    """Good records are added; a record whose item is not JSON is named in PartialFailure."""
    sink = sink_factory(redis_url, stream)
    bad = Record("bad", b"\x00bytes", 1.0)
    with pytest.raises(PartialFailure) as info:
        sink.write([*records(2), bad])
    assert info.value.failed == ["bad"]
    assert [e["id"] for e in entries(client, stream)] == ["r0", "r1"]
    with pytest.raises(PermanentError):
        sink.write([bad])


# What each redis-py error means for a batch, whatever base class a redis-py release gives it:
# TransientError when waiting and trying again can succeed, PermanentError when it cannot.
# Classes missing from the installed redis-py are left out; a class this table does not name
# (a newer release's) is held to the nearest base class it names.
_MEANING: dict[str, type[SinkError]] = {
    "RedisError": TransientError,  # trouble of no named kind: try again
    "ConnectionError": TransientError,  # refused, reset: the server or network comes back
    "TimeoutError": TransientError,
    "AuthenticationError": TransientError,  # credentials are rotated: keep the records
    "AuthorizationError": TransientError,
    "ExternalAuthProviderError": TransientError,  # the token provider is down
    "MaxConnectionsError": TransientError,  # our pool is exhausted until a call returns
    "MaxClientsReachedError": TransientError,  # the server is at maxclients until one leaves
    "BusyLoadingError": TransientError,  # LOADING: the dataset is being loaded
    "ReadOnlyError": TransientError,  # READONLY: a replica, until the failover completes
    "OutOfMemoryError": TransientError,  # OOM: until consumers trim the stream
    "TryAgainError": TransientError,  # TRYAGAIN: a slot in migration
    "ClusterError": TransientError,
    "ClusterDownError": TransientError,  # CLUSTERDOWN
    "MasterDownError": TransientError,  # MASTERDOWN: the link to the master is back soon
    "NoSuchFieldsetError": TransientError,  # session state dropped: the next call prepares it
    "InvalidResponse": TransientError,  # a garbled reply: a new connection reads a good one
    "WatchError": TransientError,  # a WATCH conflict: the next try sees the new value
    "PubSubError": TransientError,
    "LockError": TransientError,
    "LockNotOwnedError": TransientError,
    "ResponseError": PermanentError,  # WRONGTYPE, a syntax error: the same command fails again
    "DataError": PermanentError,  # a value redis-py refuses to send
    "NoPermissionError": PermanentError,  # NOPERM: the ACL forbids the command
    "NoScriptError": PermanentError,
    "ExecAbortError": PermanentError,  # EXECABORT: a command of the transaction was refused
    "ModuleError": PermanentError,
    "AuthenticationWrongNumberOfArgsError": PermanentError,  # AUTH used wrongly
    "AskError": PermanentError,  # ASK/MOVED: a cluster redirect a plain client cannot follow
    "MovedError": PermanentError,
    "ClusterCrossSlotError": PermanentError,  # CROSSSLOT: the command itself is wrong
}


def _redis_errors() -> list[type[redis.RedisError]]:
    return [
        cls
        for _, cls in inspect.getmembers(redis.exceptions, inspect.isclass)
        if issubclass(cls, redis.RedisError)
    ]


def _meaning(cls: type[redis.RedisError]) -> type[SinkError]:
    """The kind the table gives ``cls``, or else its nearest base class the table names."""
    return next(_MEANING[c.__name__] for c in cls.__mro__ if c.__name__ in _MEANING)


@pytest.mark.parametrize("cls", _redis_errors(), ids=lambda c: c.__name__)
def test_every_redis_error_is_mapped_by_meaning(cls: type[redis.RedisError]) -> None:
    """Each redis-py error class maps to the kind its meaning calls for, not its base class's."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, "failed talking to redis://:pw-SECRET@h")
    mapped = map_redis_error(exc, "sink", ["pw-SECRET"])
    assert type(mapped) is _meaning(cls)
    assert "pw-SECRET" not in str(mapped)


def test_response_and_data_errors_are_permanent() -> None:
    """The permanent side of the mapping covers ResponseError and DataError themselves."""
    assert type(map_redis_error(redis.ResponseError("ERR syntax"), "s")) is PermanentError
    assert type(map_redis_error(redis.DataError("bad"), "s")) is PermanentError


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("redis://h:6379/0", ""), {}),
        (("redis://h:6379/0", "s"), {"maxlen": -1}),
        (("redis://:pw-SECRET@h:notaport/0", "s"), {}),
        (("redis://:pw-SECRET@h/0?socket_timeout=soon", "s"), {}),
    ],
)
def test_bad_configuration_is_config_error(args: tuple[str, str], kwargs: dict[str, Any]) -> None:
    """A bad URL, stream or maxlen raises ConfigError without showing the password."""
    with pytest.raises(ConfigError) as info:
        RedisStreamSink(*args, **kwargs)
    assert "pw-SECRET" not in str(info.value)
