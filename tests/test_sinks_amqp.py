"""AmqpSink against a real rabbitmq-server started by the suite (issue 20.3)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from spoolkit import Spool
from spoolkit._internal.redact import error_repr
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.retry import RetryPolicy
from spoolkit.sinks.amqp import AmqpSink, from_sink_url
from spoolkit.typing import Record
from tests.helpers.collector import wait_for
from tests.services.rabbitmq_server import PASSWORD, RabbitServer


def records(n: int, prefix: str = "r") -> list[Record]:
    return [Record(f"{prefix}{i}", {"n": i}, 1_700_000_000.5 + i) for i in range(n)]


@pytest.fixture
def channel(
    rabbitmq_server: RabbitServer,
) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel on the session's broker, to declare queues and read them back."""
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


@pytest.fixture
def queue(channel: pika.adapters.blocking_connection.BlockingChannel) -> str:
    """A fresh durable queue, bound (as every queue) to the default exchange by its name."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, durable=True)
    return name


def drain(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str
) -> list[tuple[pika.BasicProperties, bytes]]:
    out = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((props, body))


def test_each_record_is_one_confirmed_persistent_message(
    rabbitmq_server: RabbitServer, channel, queue: str
) -> None:
    """Each record arrives as one persistent JSON message whose message_id is the record id."""
    sink = from_sink_url(f"{rabbitmq_server.url}?routing_key={queue}")
    sink.write(records(3))
    got = drain(channel, queue)
    sink.close()
    assert [p.message_id for p, _ in got] == ["r0", "r1", "r2"]
    assert {p.delivery_mode for p, _ in got} == {2}
    assert {p.content_type for p, _ in got} == {"application/json"}
    assert json.loads(got[1][1]) == {"id": "r1", "enqueued_at": 1_700_000_001.5, "item": {"n": 1}}
    assert got[0][0].timestamp == 1_700_000_000


def test_unroutable_batch_is_returned_and_permanent(rabbitmq_server: RabbitServer) -> None:
    """With no queue bound for the routing key the broker returns the messages: PermanentError."""
    sink = AmqpSink(rabbitmq_server.url, routing_key=f"nowhere-{uuid.uuid4().hex}")
    with pytest.raises(PermanentError, match="returned the message") as info:
        sink.write(records(2))
    assert "312" in str(info.value)
    sink.close()


def test_partly_unroutable_batch_names_only_the_returned(
    rabbitmq_server: RabbitServer, channel, queue: str
) -> None:
    """Records routed to no queue are named by a PartialFailure; the others are delivered."""
    sink = AmqpSink(
        rabbitmq_server.url,
        routing_key=lambda r: queue if r.item["n"] % 2 == 0 else "nowhere-at-all",
    )
    with pytest.raises(PartialFailure) as info:
        sink.write(records(5))
    assert info.value.failed == ["r1", "r3"]
    assert isinstance(info.value.cause, PermanentError)
    assert [p.message_id for p, _ in drain(channel, queue)] == ["r0", "r2", "r4"]
    sink.close()


def test_nacked_records_are_transient_and_named(rabbitmq_server: RabbitServer, channel) -> None:
    """A full reject-publish queue nacks the overflow: a PartialFailure naming it, transient."""
    name = f"full-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    sink = AmqpSink(rabbitmq_server.url, routing_key=name)
    with pytest.raises(PartialFailure) as info:
        sink.write(records(5))
    assert info.value.failed == ["r2", "r3", "r4"]
    assert isinstance(info.value.cause, TransientError)
    assert "nacked" in str(info.value)
    assert [p.message_id for p, _ in drain(channel, name)] == ["r0", "r1"]
    sink.write(records(5)[2:4])  # room again: the retried records are confirmed
    assert [p.message_id for p, _ in drain(channel, name)] == ["r2", "r3"]
    sink.close()


def test_missing_exchange_is_permanent(rabbitmq_server: RabbitServer) -> None:
    """Publishing to an exchange that does not exist (404) dead-letters: PermanentError."""
    sink = AmqpSink(rabbitmq_server.url, exchange="no-such-exchange", routing_key="k")
    with pytest.raises(PermanentError, match="404"):
        sink.write(records(1))
    sink.close()


def test_broker_down_is_transient_and_credentials_are_masked(
    rabbitmq_server: RabbitServer,
) -> None:
    """A refused connection or a refused login is a TransientError that never shows the password."""
    down = rabbitmq_server.url.replace(str(rabbitmq_server.port), "1")
    sink = AmqpSink(down, routing_key="q")
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert isinstance(info.value, TransientError)
    wrong = rabbitmq_server.url.replace(PASSWORD, "wr0ng-" + PASSWORD)
    bad_login = AmqpSink(wrong, routing_key="q")
    with pytest.raises(TransientError) as login:
        bad_login.write(records(1))
    for err, s in ((info.value, sink), (login.value, bad_login)):
        for text in (str(err), repr(s), err.sink or "", error_repr(err)):
            assert PASSWORD not in text
    assert "spool:***@" in repr(sink)


def test_broker_restart_mid_run_loses_nothing(
    rabbitmq_server: RabbitServer, channel, queue: str, tmp_path: Path
) -> None:
    """The broker is restarted while a spool publishes: every record ends in the durable queue."""
    retry = RetryPolicy(initial_wait=0.05, max_wait=0.2, jitter=0)
    sink = AmqpSink(rabbitmq_server.url, routing_key=queue)
    channel.connection.close()
    n = 400
    with Spool(tmp_path / "s", sink, batch_size=20, batch_interval=0.01, retry=retry) as spool:
        spool.put_many({"n": i} for i in range(n // 2))
        assert wait_for(lambda: spool.stats().delivered > 0, 20)
        rabbitmq_server.stop()
        spool.put_many({"n": i} for i in range(n // 2, n))
        rabbitmq_server.start()
        assert spool.flush(timeout=30)
        assert spool.dead_letters.list() == []
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.url))
    got = drain(conn.channel(), queue)
    conn.close()
    items = {json.loads(body)["item"]["n"] for _, body in got}
    assert items == set(range(n))  # duplicates allowed (at least once), losses not
    assert len({p.message_id for p, _ in got}) == n


def test_concurrent_writes_are_all_confirmed(
    rabbitmq_server: RabbitServer, channel, queue: str
) -> None:
    """Several threads writing at once all get their messages confirmed and delivered."""
    sink = AmqpSink(rabbitmq_server.url, routing_key=queue)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for b in range(5):
                sink.write(records(10, prefix=f"t{t}b{b}-"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(drain(channel, queue)) == 150
    sink.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://h/",
        "amqp://u:p@h/%2F?exchange=a&exchange=b",
        "amqp://u:p@h/%2F?mandatory=maybe",
        "amqp://u:p@h/%2F?no_such_pika_option=1",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    """A wrong scheme, a repeated or bad option, or an unknown pika option is a ConfigError."""
    build = AmqpSink if url.startswith("http") else from_sink_url
    with pytest.raises(ConfigError) as info:
        build(url)
    assert ":p@" not in str(info.value)


def test_lone_surrogates_go_as_json_escapes(
    rabbitmq_server: RabbitServer, channel, queue: str
) -> None:
    """Text with a lone surrogate is sent as valid UTF-8 JSON, its \\udce9 escaped."""
    sink = AmqpSink(rabbitmq_server.url, routing_key=queue)
    sink.write([Record("s", "caf\udce9", 0.0)])
    sink.close()
    body = drain(channel, queue)[0][1]
    assert b"\\udce9" in body
    assert json.loads(body.decode("utf-8"))["item"] == "caf\udce9"
