"""Plain-text references to Python objects: ``"package.module:name"``.

Used where configuration comes as strings (``logging.config.dictConfig``, the command line)
and must name a factory the user wrote: a sink, a spool, a serializer holding its key.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from spoolkit.errors import ConfigError

__all__ = ["build_reference", "is_reference", "resolve_reference"]

_DOTTED = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_reference(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:name`` (``name`` may be dotted)."""
    return _DOTTED.match(text) is not None


def resolve_reference(spec: str) -> Any:
    """Import ``package.module`` and return its attribute ``name``.

    Raises:
        ConfigError: the module or the attribute cannot be found.
    """
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec!r} (want 'package.module:name'): {exc}") from exc
    return obj


def build_reference(spec: str, marker: str) -> Any:
    """Import ``spec`` and make the object it names: a class, or a callable without the
    attribute ``marker`` (a factory), is called with no arguments; anything else is used as
    it is. ``marker`` is what the wanted object has (``"write"`` for a sink).

    Raises:
        ConfigError: ``spec`` cannot be imported, or calling the factory failed.
    """
    obj = resolve_reference(spec)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, marker)):
        try:
            return obj()
        except Exception as exc:
            raise ConfigError(f"{spec!r} failed: {type(exc).__name__}: {exc}") from exc
    return obj
