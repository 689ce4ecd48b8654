"""Which dead letters a ``spoolkit dead`` command acts on: ``--since``, ``--error-contains``,
``--limit`` and ``--id``, read from the letters the spool holds (oldest first)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spoolkit.cli.common import BadInput
from spoolkit.tools import inspect as insp

__all__ = ["Selection", "parse_since"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """The epoch time ``--since`` names: a duration back from ``now`` (``90s``, ``10m``,
    ``2h``, ``1d``, ``1w``) or an ISO 8601 time (UTC unless it names its offset).

    Raises:
        BadInput: ``text`` is neither.
    """
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _SECONDS[m.group(2).lower()]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"--since {text!r}: want a duration such as 10m, 2h or 1d, or an ISO time such as "
            "2026-12-06T05:00 (UTC unless it has an offset)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class Selection:
    """What the options ask for.

    Attributes:
        ids: only these record ids (empty: any).
        since: only letters whose last attempt failed at or after this epoch time.
        error_contains: only letters whose ``ErrorType: message`` contains this text
            (case-insensitive).
        limit: at most this many, the most recent.
    """

    ids: tuple[str, ...] = ()
    since: float | None = None
    error_contains: str | None = None
    limit: int | None = None

    @property
    def filtered(self) -> bool:
        """Whether any option narrows the selection (else: every dead letter)."""
        return bool(self.ids) or any(
            v is not None for v in (self.since, self.error_contains, self.limit)
        )

    def apply(self, letters: Sequence[insp.DeadLetterInfo]) -> list[insp.DeadLetterInfo]:
        """The letters selected, oldest first."""
        wanted = set(self.ids)
        needle = self.error_contains.lower() if self.error_contains is not None else None
        out = [
            d
            for d in letters
            if (not wanted or d.id in wanted)
            and (self.since is None or d.last_attempt_at >= self.since)
            and (needle is None or needle in f"{d.error_type}: {d.error}".lower())
        ]
        if self.limit is not None and len(out) > self.limit:
            out = sorted(out, key=lambda d: d.last_attempt_at)[-self.limit :]
        return out
