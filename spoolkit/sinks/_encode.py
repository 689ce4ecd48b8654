"""JSON encoding shared by the sinks, and what to raise for records that cannot be encoded.

A record whose item cannot be encoded must not hold back the rest of its batch: a sink encodes
every record first, delivers the good ones, then raises :class:`PartialFailure` naming the bad
ones. When the spool retries those, the batch holds only bad records and the sink raises
:class:`PermanentError`, which dead-letters them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spoolkit.errors import PartialFailure, PermanentError
from spoolkit.typing import Record

__all__ = ["Encoded", "ToJson", "default_shape", "dumps", "encode_batch"]

ToJson = Callable[[Record], Any]
"""Maps a record to the JSON-safe value a sink writes for it."""


def default_shape(record: Record) -> dict[str, Any]:
    """The value written for a record when no ``to_json`` is given.

    Args:
        record: the record.

    Returns:
        ``{"id": record.id, "enqueued_at": record.enqueued_at, "item": record.item}``.
    """
    return {"id": record.id, "enqueued_at": record.enqueued_at, "item": record.item}


def dumps(value: Any) -> str:
    """Encode ``value`` as compact, strict JSON (no NaN or Infinity, UTF-8 kept as is).

    Raises:
        TypeError: a value JSON cannot represent (bytes, sets, arbitrary objects).
        ValueError: NaN or infinity, or a circular reference.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass
class Encoded:
    """The outcome of encoding a batch.

    Attributes:
        ok: the records that encoded, with their JSON text, in batch order.
        bad: the records that did not, with the error.
    """

    ok: list[tuple[Record, str]] = field(default_factory=list)
    bad: list[tuple[Record, Exception]] = field(default_factory=list)

    def raise_if_all_bad(self, sink: str) -> None:
        """Raise :class:`PermanentError` when no record of a non-empty batch encoded."""
        if self.bad and not self.ok:
            raise PermanentError(self._describe(), sink=sink) from self.bad[0][1]

    def raise_if_some_bad(self, sink: str) -> None:
        """Raise :class:`PartialFailure` naming the bad records, once the good ones are sent."""
        if self.bad:
            cause = PermanentError(self._describe(), sink=sink)
            raise PartialFailure(
                [r.id for r, _ in self.bad], self._describe(), cause=cause, sink=sink
            ) from self.bad[0][1]

    def _describe(self) -> str:
        record, exc = self.bad[0]
        more = f" (and {len(self.bad) - 1} more)" if len(self.bad) > 1 else ""
        return (
            f"record {record.id!r}{more} cannot be encoded as JSON: {type(exc).__name__}: "
            f"{exc}; give the sink a to_json function that returns JSON-safe values"
        )


def encode_batch(batch: Sequence[Record], to_json: ToJson | None) -> Encoded:
    """Encode every record of ``batch``, sorting them into encodable and not.

    Args:
        batch: the records.
        to_json: maps a record to a JSON-safe value; :func:`default_shape` when None.

    Returns:
        The encoded records and the failures. An exception raised by ``to_json`` counts as a
        failure of that record.
    """
    shape = to_json or default_shape
    out = Encoded()
    for record in batch:
        try:
            out.ok.append((record, dumps(shape(record))))
        except Exception as exc:  # a user's to_json may raise anything
            out.bad.append((record, exc))
    return out
