"""JSON text as UTF-8 bytes when it holds lone surrogates: shared by the JSON serializer, the
producers and the sinks that send JSON."""

from __future__ import annotations

import re

__all__ = ["SURROGATE", "escape_surrogates", "json_utf8"]

SURROGATE = re.compile("[\\ud800-\\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_surrogates(text: str) -> bytes:
    """The UTF-8 of JSON ``text`` in which lone surrogates (``"caf\\udce9"``, a file name read
    with ``surrogateescape``) are written as JSON ``\\uXXXX`` escapes, since UTF-8 cannot hold
    them. JSON text has such characters only inside strings, where the escape means the same
    character: decoding gives back the same ``str``. (A high surrogate directly followed by a
    low one is read back as the one character the pair encodes, as by any JSON decoder.)

    Call it after ``text.encode()`` raised ``UnicodeEncodeError``: text without surrogates
    never pays for the search.
    """
    return SURROGATE.sub(_escape, text).encode()


def json_utf8(text: str) -> bytes:
    """The UTF-8 of JSON ``text``, lone surrogates written as ``\\uXXXX`` escapes (for sinks
    that send JSON text made from records a JSON spool gave back with such characters)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return escape_surrogates(text)
