"""Serializers: how items become the bytes of a record, and back.

``"pickle"`` (the default, as in pqueue) stores any picklable object; it trusts whoever can
write the spool directory, since loading a pickle can run code. ``"json"`` stores JSON-safe
values and is the choice for logs. ``"raw"`` stores ``bytes`` as they are. Any object with
``dumps(obj) -> bytes`` and ``loads(bytes) -> obj`` works too.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from spoolkit._internal.json_utf8 import escape_surrogates
from spoolkit.errors import ConfigError
from spoolkit.typing import Serializer

__all__ = [
    "BUILTIN_NAMES",
    "JsonSerializer",
    "JsonText",
    "PickleSerializer",
    "RawSerializer",
    "resolve",
]


class PickleSerializer:
    """Pickle at Python's default protocol (4 on 3.11-3.13, 5 from 3.14; every supported
    Python reads both). Any picklable object; trusts the spool directory's writers.

    ``dumps`` and ``loads`` are ``pickle.dumps`` and ``pickle.loads`` themselves, so a queue
    calls them once per record with no Python frame in between.
    """

    name = "pickle"
    dumps = staticmethod(pickle.dumps)
    loads = staticmethod(pickle.loads)


class JsonText:
    """UTF-8 JSON text already made (by a producer that knows its item's shape): the JSON
    serializer stores :attr:`data` as it is. Only for spools that store JSON.

    Attributes:
        data: the JSON text, UTF-8.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class JsonSerializer:
    """Compact UTF-8 JSON. Safe to load from an untrusted directory.

    Text is stored as UTF-8 as it is, except lone surrogates (a ``surrogateescape``d file name
    such as ``"caf\\udce9"``), which UTF-8 cannot hold: they are stored as JSON ``\\udce9``
    escapes and load back as the same ``str``. (A high surrogate directly followed by a low one
    loads back as the one character the pair encodes, as with any JSON decoder.)
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder()

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` as JSON; raises ``TypeError``/``ValueError`` if it is not JSON-safe.

        A :class:`JsonText` is stored as it is.
        """
        if type(obj) is JsonText:
            return obj.data
        text = self._encoder.encode(obj)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate: stored as its \\uXXXX escape
            return escape_surrogates(text)

    def loads(self, data: bytes) -> Any:
        """Decode JSON."""
        return self._decoder.decode(data.decode())


class RawSerializer:
    """Bytes in, bytes out, without a copy where possible."""

    name = "raw"

    def dumps(self, obj: Any) -> bytes:
        """Return ``obj`` itself; only ``bytes``-like items are accepted."""
        if type(obj) is bytes:
            return obj
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        raise TypeError(f"the raw serializer stores bytes only, got {type(obj).__name__}")

    def loads(self, data: bytes) -> Any:
        """Return ``data``."""
        return data


_BUILTIN: dict[str, type[PickleSerializer | JsonSerializer | RawSerializer]] = {
    "pickle": PickleSerializer,
    "json": JsonSerializer,
    "raw": RawSerializer,
}
BUILTIN_NAMES = tuple(_BUILTIN)
"""The names of the built-in serializers: ``("pickle", "json", "raw")``."""


def resolve(serializer: str | Serializer) -> tuple[str, Serializer]:
    """Return ``(name, serializer)`` for a built-in name or a serializer object.

    Raises:
        ConfigError: an unknown name, or an object without ``dumps``/``loads``.
    """
    if isinstance(serializer, str):
        try:
            return serializer, _BUILTIN[serializer]()
        except KeyError:
            raise ConfigError(
                f"unknown serializer {serializer!r}; use one of {sorted(_BUILTIN)} "
                "or an object with dumps(obj) -> bytes and loads(bytes) -> obj"
            ) from None
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise ConfigError(
            f"serializer {serializer!r} has no dumps()/loads(); use one of {sorted(_BUILTIN)} "
            "or an object with dumps(obj) -> bytes and loads(bytes) -> obj"
        )
    name = str(getattr(serializer, "name", type(serializer).__qualname__))
    return name, serializer
