"""NatsSink against a real ``nats-server -js`` started by the suite (issue 20.4)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from spoolkit import Spool
from spoolkit._internal.redact import error_repr
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.retry import RetryPolicy
from spoolkit.sinks.nats import NatsSink, from_sink_url
from spoolkit.typing import Record
from tests.helpers.collector import wait_for
from tests.services.nats_server import NatsServer


def records(n: int, prefix: str = "r") -> list[Record]:
    return [Record(f"{prefix}{i}", {"n": i}, 1_700_000_000.5 + i) for i in range(n)]


def admin(url: str, work: Callable[[Any], Any]) -> Any:
    """Run ``work(jetstream_context)`` on a throwaway client of our own."""

    async def run() -> Any:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def make_stream(url: str) -> tuple[str, str]:
    """A fresh file-backed stream capturing one subject: (stream, subject)."""
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"S{tag}", f"events.{tag}"
    admin(url, lambda js: js.add_stream(name=stream, subjects=[subject], storage="file"))
    return stream, subject


def stored(url: str, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of the stream: (its Nats-Msg-Id, its JSON payload)."""

    async def work(js: Any) -> list[tuple[str, dict[str, Any]]]:
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.headers["Nats-Msg-Id"], json.loads(msg.data)))
        return out if info.state.messages else []

    result: list[tuple[str, dict[str, Any]]] = admin(url, work)
    return result


def test_each_record_is_one_message_with_its_id(nats_server: NatsServer) -> None:
    """Each record is stored as one JSON message whose Nats-Msg-Id is the record id, in order."""
    stream, subject = make_stream(nats_server.url)
    sink = from_sink_url(f"{nats_server.url}?stream={stream}&subject={subject}")
    sink.write(records(3))
    sink.close()
    got = stored(nats_server.url, stream)
    assert [mid for mid, _ in got] == ["r0", "r1", "r2"]
    assert got[2][1] == {"id": "r2", "enqueued_at": 1_700_000_002.5, "item": {"n": 2}}


def test_a_redelivered_batch_is_stored_once(nats_server: NatsServer) -> None:
    """Publishing the same batch twice leaves one copy: JetStream de-duplicates on Nats-Msg-Id."""
    stream, subject = make_stream(nats_server.url)
    sink = NatsSink(nats_server.url, subject, stream=stream)
    batch = records(4)
    sink.write(batch)
    sink.write(batch[1:] + records(1, prefix="new"))
    sink.close()
    assert [mid for mid, _ in stored(nats_server.url, stream)] == ["r0", "r1", "r2", "r3", "new0"]


def test_no_stream_on_the_subject_is_transient(nats_server: NatsServer) -> None:
    """A subject no stream captures gets no responder: TransientError (the records wait)."""
    sink = NatsSink(nats_server.url, f"nowhere.{uuid.uuid4().hex}", timeout=2)
    with pytest.raises(TransientError, match="no JetStream stream answered"):
        sink.write(records(2))
    sink.close()


def test_another_stream_than_expected_is_permanent(nats_server: NatsServer) -> None:
    """When the subject belongs to another stream than ``stream``, JetStream refuses: permanent."""
    _, subject = make_stream(nats_server.url)
    sink = NatsSink(nats_server.url, subject, stream="SOMEOTHER")
    with pytest.raises(PermanentError, match=r"APIError|BadRequest"):
        sink.write(records(2))
    sink.close()


def test_too_large_messages_fail_alone(nats_server: NatsServer) -> None:
    """A message over max_payload is named by a PartialFailure; the others are stored."""
    stream, subject = make_stream(nats_server.url)
    sink = NatsSink(nats_server.url, subject, stream=stream)
    batch = [Record("small", "x", 0.0), Record("huge", "y" * 2_000_000, 0.0)]
    with pytest.raises(PartialFailure) as info:
        sink.write(batch)
    assert info.value.failed == ["huge"]
    assert isinstance(info.value.cause, PermanentError)
    sink.close()
    assert [mid for mid, _ in stored(nats_server.url, stream)] == ["small"]


def test_server_down_then_up_loses_nothing(
    nats_server_factory: Callable[[], NatsServer], tmp_path: Path
) -> None:
    """The server stops while a spool publishes and comes back: every record is stored, once."""
    server = nats_server_factory()
    stream, subject = make_stream(server.url)
    retry = RetryPolicy(initial_wait=0.05, max_wait=0.2, jitter=0)
    sink = NatsSink(server.url, subject, stream=stream, timeout=1)
    n = 300
    with Spool(tmp_path / "s", sink, batch_size=20, batch_interval=0.01, retry=retry) as spool:
        spool.put_many({"n": i} for i in range(n // 2))
        assert spool.flush(timeout=20)
        server.stop()
        spool.put_many({"n": i} for i in range(n // 2, n))
        assert wait_for(lambda: spool.stats().last_error is not None, 20)
        server.start()
        assert spool.flush(timeout=30)
        assert spool.dead_letters.list() == []
    got = stored(server.url, stream)
    assert sorted(item["item"]["n"] for _, item in got) == list(range(n))  # each exactly once


def test_credentials_never_show(nats_server: NatsServer) -> None:
    """A password or a lone token in the URL never appears in repr, errors or their chain."""
    sink = NatsSink("nats://app:pa55-Word@127.0.0.1:1", "a.b", timeout=1)
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    token_sink = NatsSink(f"nats://T0ken-xyz@127.0.0.1:{nats_server.port}", "a.b", timeout=1)
    for text in (repr(sink), repr(token_sink), str(info.value), error_repr(info.value)):
        assert "pa55-Word" not in text
        assert "T0ken-xyz" not in text
    assert "app:***@" in repr(sink)
    assert "***@127.0.0.1" in repr(token_sink)
    sink.close()
    token_sink.close()


@pytest.mark.parametrize(
    "url",
    [
        "nats://h:4222",
        "nats://h:4222?subject=a&colour=red",
        "nats://h:4222?subject=a&subject=b",
        "nats://h:4222?subject=a&timeout=soon",
        "http://h:4222?subject=a",
        "nats://h:99999?subject=a",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    """No subject, an unknown, repeated or bad option, another scheme or a bad port: ConfigError."""
    with pytest.raises(ConfigError):
        from_sink_url(url)


def test_lone_surrogates_go_as_json_escapes(nats_server: NatsServer) -> None:
    """Text with a lone surrogate is sent as valid UTF-8 JSON, its \\udce9 escaped."""
    stream, subject = make_stream(nats_server.url)
    sink = NatsSink(nats_server.url, subject, stream=stream)
    sink.write([Record("s", "caf\udce9", 0.0)])
    sink.close()

    async def first(js: Any) -> bytes:
        data: bytes = (await js.get_msg(stream, 1)).data
        return data

    raw = admin(nats_server.url, first)
    assert b"\\udce9" in raw
    assert json.loads(raw.decode("utf-8"))["item"] == "caf\udce9"
