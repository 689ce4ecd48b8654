"""The JSON text of a :func:`~spoolkit.producers.logging_handler.record_to_dict` dict, made
without the generic encoder's walk over a dict whose keys and value types are known.

A :class:`~spoolkit.SpoolHandler` whose spool stores JSON hands the spool this text, marked as
:class:`~spoolkit.serializers.JsonText` so that the JSON serializer stores it as it is. Every
log call pays for this encoding on the application's thread, which is why it has a path of its
own (figures in ``docs/benchmarks.md``). The text decodes to exactly what the generic
encoder's would (``tests/test_record_json.py`` checks it on every kind of value). A lone
surrogate (a ``surrogateescape``d file name in a message) is written as its JSON ``\\uXXXX``
escape, as :class:`~spoolkit.serializers.JsonSerializer` does, and decodes to the same ``str``.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # the C escaper of ensure_ascii=False
from typing import Any

from spoolkit._internal.json_utf8 import escape_surrogates
from spoolkit.serializers import JsonText

__all__ = ["record_json"]

_generic = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_TEMPLATE = (
    '{"timestamp":%s,"level":%s,"logger":%s,"message":%s,"module":%s,"function":%s,'
    '"line":%s,"process":%s,"thread":%s,"exception":%s,"stack":%s,"extra":%s}'
)


def _value(x: Any) -> str:
    t = type(x)
    if t is str:
        return encode_basestring(x)
    if x is None:
        return "null"
    if t is int:  # not bool: True is an int, and its JSON is not str(True)
        return str(x)
    return _generic(x)


def record_json(d: dict[str, Any]) -> JsonText:
    """The JSON text of ``d``, a record dict with exactly record_to_dict's keys."""
    enc, v, extra = encode_basestring, _value, d["extra"]
    try:  # timestamp, level, logger, message and module are str in every LogRecord
        text = _TEMPLATE % (
            enc(d["timestamp"]),
            enc(d["level"]),
            enc(d["logger"]),
            enc(d["message"]),
            enc(d["module"]),
            v(d["function"]),
            v(d["line"]),
            v(d["process"]),
            v(d["thread"]),
            v(d["exception"]),
            v(d["stack"]),
            _generic(extra) if extra else "{}",
        )
    except TypeError:  # a record someone built by hand: the generic encoder decides
        text = _generic(d)
    try:
        return JsonText(text.encode())
    except UnicodeEncodeError:  # a lone surrogate ("caf\\udce9"): stored as its \\uXXXX escape
        return JsonText(escape_surrogates(text))
