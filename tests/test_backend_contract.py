"""Every shipped backend declares the whole Backend contract (spoolkit/backends/base.py).

The contract is a Protocol: ``isinstance`` only checks that the names exist, so this also
checks what each name is (a method with the contract's parameters, or a readable value) and
that no backend keeps a dead-lettering hook of its own (the spool screens every batch in one
place, spoolkit/spool/screen.py). Built without a server: no backend here connects before
its first call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolkit.backends.base import Backend, Message

# What the Protocol declares: its methods and properties (the names typing.Protocol adds all
# start with an underscore).
MEMBERS = sorted(name for name in vars(Backend) if not name.startswith("_"))
PROPERTIES = sorted(name for name in MEMBERS if isinstance(vars(Backend)[name], property))
METHODS = sorted(name for name in MEMBERS if name not in PROPERTIES)
# Members the contract dropped: dead-lettering is the spool's, and ids come in lists.
DROPPED = ("bind_dead_letters", "dead_lettered", "record_id", "queue_put")


def _disk(tmp_path: Path) -> Any:
    from spoolkit.backends.disk import DiskBackend

    return DiskBackend(tmp_path / "disk")


def _lanes(tmp_path: Path) -> Any:
    from spoolkit.backends.lanes import LanesBackend

    return LanesBackend(tmp_path / "lanes")


def _redis(tmp_path: Path) -> Any:
    pytest.importorskip("redis")
    from spoolkit.backends.redis import RedisBackend

    return RedisBackend("redis://127.0.0.1:1/0", stream="s", group="g")  # connects lazily


def _nats(tmp_path: Path) -> Any:
    pytest.importorskip("nats")
    from spoolkit.backends.nats import NatsBackend

    return NatsBackend("nats://127.0.0.1:1", stream="S")  # connects lazily


# DiskBackend and LanesBackend are being converted to the full contract in the same step
# (issue 17) as the Redis and JetStream backends: their cases fail until that lands.
BACKENDS: dict[str, Callable[[Path], Any]] = {
    "disk": _disk,
    "lanes": _lanes,
    "redis": _redis,
    "nats": _nats,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made = BACKENDS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_protocol_members_are_what_the_docstring_lists() -> None:
    """The members read from the Protocol are the contract's (a sanity check of MEMBERS)."""
    assert {"uid", "path", "max_deliveries", "cheap_puts", "puts", "undecodable"} <= set(PROPERTIES)
    assert {"put", "get_batch", "record_ids", "ack", "nack", "close"} <= set(METHODS)
    assert not {"Protocol", "Generic"} & set(MEMBERS)


def test_declares_every_member(backend: Any) -> None:
    """No member of the contract is missing (nothing is left to ``getattr`` defaults)."""
    missing = [name for name in MEMBERS if not hasattr(backend, name)]
    assert missing == []
    assert isinstance(backend, Backend)


def test_methods_take_the_contracts_parameters(backend: Any) -> None:
    """Each method accepts the contract's parameters, by the same names and kinds."""

    def shape(fn: Any) -> list[tuple[str, Any]]:
        params = inspect.signature(fn).parameters.values()
        return [(p.name, p.kind) for p in params if p.name != "self"]

    wrong = {
        name: (shape(getattr(backend, name)), shape(vars(Backend)[name]))
        for name in METHODS
        if hasattr(backend, name)  # a missing one fails test_declares_every_member
        and shape(getattr(backend, name)) != shape(vars(Backend)[name])
    }
    assert wrong == {}


def test_properties_are_values(backend: Any) -> None:
    """Properties read as values (not methods), of the contract's types, without I/O."""
    values = {name: getattr(backend, name, None) for name in PROPERTIES}
    assert not [name for name, value in values.items() if callable(value)]
    assert isinstance(values["uid"], str)
    assert values["uid"]
    assert values["path"] is None or isinstance(values["path"], str)
    assert values["max_deliveries"] is None or isinstance(values["max_deliveries"], int)
    assert isinstance(values["cheap_puts"], bool)
    for counter in ("puts", "undecodable", "lost_records"):
        assert values[counter] == 0


def test_no_dead_lettering_of_its_own(backend: Any) -> None:
    """Dead-lettering is the spool's alone: no backend takes dead letters or counts them."""
    assert [name for name in DROPPED if hasattr(backend, name)] == []


@pytest.mark.parametrize("extra", ["redis", "nats"])
def test_stream_backends_answer_for_a_store_without_lanes(extra: str, tmp_path: Path) -> None:
    """The stream backends give the contract's answers for a remote store without lanes."""
    made = BACKENDS[extra](tmp_path)
    try:
        assert made.path is None
        assert made.cheap_puts is False
        assert made.max_deliveries == 10
        assert made.waiting_by_lane() is None
        assert made.lanes_held() == []
        assert made.hand_over() is False
        assert made.closed_under() == ""
        assert made.bytes_used() == 0
        assert made.lost_records == 0
    finally:
        made.close()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("spoolkit.backends.redis", "StreamMessage"),
        ("spoolkit.backends.nats", "JetStreamMessage"),
    ],
)
def test_stream_messages_are_messages(module: str, name: str) -> None:
    """The stream backends' messages carry what the contract's Message promises."""
    cls = getattr(pytest.importorskip(module), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    wanted = {n for n in vars(Message) if not n.startswith("_")}
    assert wanted == {"item", "enqueued_at", "deliveries"}
    assert wanted <= fields
