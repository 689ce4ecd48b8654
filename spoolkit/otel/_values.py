"""Python values to OTLP ``AnyValue``/``KeyValue`` protobufs and back (no SDK needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)

__all__ = ["from_any_value", "key_values", "to_any_value"]

_INT64 = (-(2**63), 2**63 - 1)


def to_any_value(value: Any) -> AnyValue:  # noqa: PLR0911 - one return per type
    """``value`` as an ``AnyValue``: str, bool, int (int64; larger as text), float, bytes,
    lists/tuples (arrays), mappings (key-value lists, keys as text), None (empty); anything
    else as its ``str``."""
    if value is None:
        return AnyValue()
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes | bytearray):
        return AnyValue(bytes_value=bytes(value))
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[to_any_value(v) for v in value]))
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value.items())))
    return AnyValue(string_value=str(value))


def key_values(pairs: Iterable[tuple[Any, Any]]) -> list[KeyValue]:
    """``(key, value)`` pairs as ``KeyValue`` protobufs (keys as text)."""
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
