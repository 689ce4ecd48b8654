"""Python values to OTLP ``AnyValue``/``KeyValue`` protobufs and back (no SDK needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "add_key_values",
    "from_any_value",
    "key_values",
    "set_any_value",
    "to_any_value",
]

_INT64 = (-(2**63), 2**63 - 1)


def set_any_value(target: AnyValue, value: Any) -> None:  # noqa: PLR0911 - one return per type
    """Write ``value`` into the ``AnyValue`` ``target`` in place (cheaper than building one and
    copying it): str, bool, int (int64; larger as text), float, bytes, lists/tuples (arrays),
    mappings (key-value lists, keys as text), None (left empty); anything else as its ``str``."""
    if value is None:
        return
    if isinstance(value, str):
        target.string_value = value
        return
    if isinstance(value, bool):
        target.bool_value = value
        return
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int_value = value
        else:
            target.string_value = str(value)
        return
    if isinstance(value, float):
        target.double_value = value
        return
    if isinstance(value, bytes | bytearray):
        target.bytes_value = bytes(value)
        return
    if isinstance(value, list | tuple):
        array = target.array_value
        array.SetInParent()  # an empty list is still an array
        for item in value:
            set_any_value(array.values.add(), item)
        return
    if isinstance(value, Mapping):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        add_key_values(kvlist.values, value.items())
        return
    target.string_value = str(value)


def to_any_value(value: Any) -> AnyValue:
    """``value`` as a new ``AnyValue`` (see :func:`set_any_value`)."""
    out = AnyValue()
    set_any_value(out, value)
    return out


def add_key_values(container: Any, pairs: Iterable[tuple[Any, Any]]) -> None:
    """Append ``(key, value)`` pairs to a repeated ``KeyValue`` field (keys as text)."""
    add = container.add
    for key, value in pairs:
        kv = add()
        kv.key = str(key)
        set_any_value(kv.value, value)


def key_values(pairs: Iterable[tuple[Any, Any]]) -> list[KeyValue]:
    """``(key, value)`` pairs as new ``KeyValue`` protobufs (keys as text)."""
    return [KeyValue(key=str(k), value=to_any_value(v)) for k, v in pairs]


def from_any_value(value: AnyValue) -> Any:
    """The Python value an ``AnyValue`` holds (arrays as tuples, key-value lists as dicts,
    an empty value as None): what the OpenTelemetry SDK keeps in attributes and bodies."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(from_any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: from_any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)
