"""``@spool.producer`` and ``@spool.deferred``: decorators that feed a spool.

A deferred call travels through the spool as an envelope next to ordinary data records: with
the pickle serializer a :class:`DeferredCall`, with other serializers a plain mapping marked
with the key ``"__spoolkit_call__"``. Workers hand envelopes to the function registered under
their name instead of to the sink.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, cast

import tenacity

from spoolkit.errors import ConfigError
from spoolkit.retry import RetryPolicy

__all__ = [
    "DeferredCall",
    "DeferredFunction",
    "DeferredHandle",
    "Registered",
    "as_call",
    "producer",
    "register_deferred",
    "to_item",
]

P = ParamSpec("P")
R = TypeVar("R")

CALL_MARK = "__spoolkit_call__"


@dataclass(frozen=True, slots=True)
class DeferredCall:
    """The envelope of a deferred call: which function, with what arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def to_item(call: DeferredCall, serializer_name: str) -> Any:
    """The item stored for ``call``: the dataclass for pickle, a marked dict otherwise."""
    if serializer_name == "pickle":
        return call
    return {CALL_MARK: call.name, "args": list(call.args), "kwargs": dict(call.kwargs)}


def as_call(item: Any) -> DeferredCall | None:
    """The deferred call ``item`` carries, or None for a data record."""
    kind = type(item)
    if kind is DeferredCall:
        return cast(DeferredCall, item)
    if kind is dict and CALL_MARK in item:
        return DeferredCall(str(item[CALL_MARK]), tuple(item["args"]), dict(item["kwargs"]))
    return None


@dataclass(frozen=True, slots=True)
class DeferredHandle:
    """What calling a ``@spool.deferred`` function returns.

    Attributes:
        id: the record id of the stored call (see :attr:`spoolkit.Record.id`).
        name: the registered name of the function.
    """

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Registered:
    """A function registered for deferred calls."""

    func: Callable[..., Any]
    retry: RetryPolicy | tenacity.Retrying | None

    def run(self, call: DeferredCall) -> None:
        """Run the real function (``async def`` ones in a fresh event loop)."""
        result = self.func(*call.args, **call.kwargs)
        if inspect.iscoroutine(result):
            asyncio.run(result)


class DeferredFunction(Generic[P]):
    """A function decorated with ``@spool.deferred``: calling it stores the call.

    Attributes:
        name: the name the call is stored and looked up under.
        func: the real function, to call it directly.
    """

    def __init__(
        self,
        defer: Callable[[str, tuple[Any, ...], dict[str, Any]], DeferredHandle],
        func: Callable[P, Any],
        name: str,
    ) -> None:
        self._defer = defer
        self.func = func
        self.name = name
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> DeferredHandle:
        """Store the call durably and return at once.

        Raises:
            SerializationError: an argument cannot be serialized; nothing was stored.
        """
        return self._defer(self.name, args, dict(kwargs))

    def __repr__(self) -> str:
        return f"<deferred {self.name}>"


def register_deferred(
    registry: dict[str, Registered],
    func: Callable[P, Any],
    name: str | None,
    retry: RetryPolicy | tenacity.Retrying | None,
    defer: Callable[[str, tuple[Any, ...], dict[str, Any]], DeferredHandle],
) -> DeferredFunction[P]:
    """Register ``func`` under ``name`` (default ``module.qualname``) and wrap it.

    Raises:
        ConfigError: another function is already registered under that name.
    """
    key = name or f"{func.__module__}.{func.__qualname__}"
    old = registry.get(key)
    if old is not None and old.func is not func:
        raise ConfigError(f"a deferred function is already registered as {key!r}")
    registry[key] = Registered(func, retry)
    return DeferredFunction(defer, func, key)


def producer(put: Callable[[Any], None], func: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``func`` so that what it returns (or yields) is also ``put``; ``None`` is not.

    Works for plain functions, methods, generator functions, ``async def`` functions and
    async generators; the caller gets the same values as without the decorator.
    """
    if inspect.isasyncgenfunction(func):
        agen_func = cast(Callable[..., AsyncGenerator[Any, Any]], func)

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            async for value in agen_func(*args, **kwargs):
                if value is not None:
                    put(value)
                yield value

        return cast(Callable[P, R], agen_wrapper)
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            value = await func(*args, **kwargs)
            if value is not None:
                put(value)
            return value

        return cast(Callable[P, R], async_wrapper)
    if inspect.isgeneratorfunction(func):
        gen_func = cast(Callable[..., Generator[Any, Any, Any]], func)

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            return (yield from _tap(gen_func(*args, **kwargs), put))

        return cast(Callable[P, R], gen_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        value = func(*args, **kwargs)
        if value is not None:
            put(value)
        return value

    return wrapper


def _tap(gen: Generator[Any, Any, Any], put: Callable[[Any], None]) -> Generator[Any, Any, Any]:
    """Yield what ``gen`` yields, putting each value; pass ``send``/``throw``/``close`` on."""
    try:
        value = next(gen)
        while True:
            if value is not None:
                put(value)
            try:
                sent = yield value
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as exc:
                value = gen.throw(exc)
            else:
                value = gen.send(sent)
    except StopIteration as stop:
        return stop.value
