"""What the crash loop knows and checks: records put, records delivered, per cycle.

:class:`Ledger` is fed the child's stdout lines and, after each cycle, the lines its sink log
gained and what is still in the spool or its dead letters. It holds the invariants:

- no record is delivered that was never put (its number was never announced by ``@put``);
- no delivered record is corrupted (its fields match what was put, digest included);
- a record is delivered more than once only if its earlier delivery was the last batch its
  worker logged before a SIGKILL (the batch in flight: delivered, not yet acknowledged);
- after every cycle, every record whose ``put`` returned is delivered, dead-lettered or still
  waiting in the spool; after the final drain, delivered or dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from spoolkit._torture.child import item_is_intact

__all__ = ["CrashLoopReport", "Ledger"]

_MAX_PROBLEMS = 20


def sink_deliveries(
    log: bytes, where: str, attempted: set[int], problem: Callable[[str], None]
) -> tuple[list[tuple[str, int, str, int]], dict[str, int]]:
    """Read the complete batch lines of a recording sink's log.

    Returns the deliveries ``(worker, batch number, record id, record number)`` of records
    that were put, in log order, and the last batch number of each worker. Unreadable lines,
    corrupted records and records never put are reported through ``problem``, prefixed with
    ``where``; a corrupted item is reported and still counted as delivered.
    """
    found: list[tuple[str, int, str, int]] = []
    batches: dict[str, int] = {}
    for raw in log.split(b"\n"):
        if not raw:
            continue
        tag, worker, *fields = raw.decode(errors="replace").split(" ")
        if tag != "B":
            problem(f"{where}: unreadable sink log line {raw[:80]!r}")
            continue
        b = batches[worker] = batches.get(worker, -1) + 1
        for text in fields:
            parts = text.split(",")
            if len(parts) != 4 or not parts[1].lstrip("-").isdigit():
                problem(f"{where}: corrupted record in the sink log: {text[:80]!r}")
                continue
            rid, n, pad, digest = parts[0], int(parts[1]), parts[2], parts[3]
            if n not in attempted:
                problem(f"{where}: record {n} ({rid}) delivered but never put")
                continue
            if not item_is_intact(n, pad, digest):
                problem(f"{where}: record {n} ({rid}) delivered corrupted")
            found.append((worker, b, rid, n))
    return found, batches


@dataclass
class CrashLoopReport:
    """The outcome of a crash loop.

    Attributes:
        cycles: kill cycles run (the final drain not counted).
        records: records whose ``put`` returned.
        delivered: distinct records the sink accepted.
        dead_lettered: distinct records in the dead letters.
        duplicates: deliveries beyond the first, all of batches in flight at a kill.
        lost: records whose ``put`` returned and that were neither delivered nor dead-lettered.
        kills: how many kills landed after each phase's announcement (``idle``: the child was
            done before the chosen event came).
        problems: every broken invariant, described (at most 20, then a count).
        returned: the numbers of the records whose ``put`` returned (items:
            ``spoolkit._torture.child.make_item(n)``).
        directory: where the spool, the sink log and the sink's own directory are.
        duplicates_kept: items found more than once in the user's destination (see
            :func:`spoolkit.testing.check_sink_under_crash_loop`'s ``read_back``).
    """

    cycles: int = 0
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    returned: frozenset[int] = frozenset()
    directory: str = ""
    duplicates_kept: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was lost and no invariant broke."""
        return self.lost == 0 and not self.problems

    def line(self) -> str:
        """The one-line summary the long mode prints."""
        return (
            f"cycles={self.cycles} records={self.records} "
            f"duplicates={self.duplicates} lost={self.lost}"
        )


@dataclass(frozen=True, slots=True)
class _Sighting:
    cycle: int
    worker: str
    batch: int
    record_id: str


class LedgerBase:
    """What both crash loops' checkers keep: the records put (``attempted``: the child said it
    was about to; ``returned``: its ``put`` returned), where each was seen delivered, the
    dead letters, and the problems noted."""

    def __init__(self) -> None:
        self.attempted: set[int] = set()
        self.returned: set[int] = set()
        self.sightings: dict[int, list[Any]] = {}
        self.last_batch: dict[tuple[int, str], int] = {}
        self.killed: set[int] = set()
        self.dead: set[int] = set()
        self.problems: list[str] = []
        self._hidden = 0

    def problem(self, text: str) -> None:
        """Note a broken invariant."""
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self._hidden += 1

    def all_problems(self) -> list[str]:
        """The problems noted, with a count of those left out."""
        hidden = [f"... and {self._hidden} more problem(s)"] if self._hidden else []
        return [*self.problems, *hidden]

    def check_kept(
        self, cycle: int, pending: Iterable[int], dead: Iterable[int], *, final: bool
    ) -> set[int]:
        """Return the records whose ``put`` returned and that are nowhere (and note them)."""
        pending = set(pending)
        self.dead = set(dead)
        for n in self.dead - self.attempted:
            self.problem(f"cycle {cycle}: record {n} dead-lettered but never put")
        if final and pending:
            self.problem(f"{len(pending)} record(s) still waiting in the spool after the drain")
        missing = self.returned - self.sightings.keys() - self.dead - pending
        if missing:
            sample = sorted(missing)[:5]
            self.problem(
                f"cycle {cycle}: {len(missing)} record(s) put but neither delivered, "
                f"dead-lettered nor waiting, e.g. {sample}"
            )
        return missing


class Ledger(LedgerBase):
    """The checker of the crash loop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicates = 0

    def child_line(self, line: bytes) -> str:
        """Take one stdout line of the child; return its event name (``@put``, ``P``, ...)."""
        kind, *rest = line.decode(errors="replace").split()
        if kind in ("@put", "P"):
            first, last = int(rest[0]), int(rest[1])
            (self.attempted if kind == "@put" else self.returned).update(range(first, last + 1))
        return kind

    def sink_lines(self, cycle: int, section: bytes) -> None:
        """Check the complete batch lines the sink logged during ``cycle``."""
        found, last = sink_deliveries(section, f"cycle {cycle}", self.attempted, self.problem)
        for worker, batch, rid, n in found:
            self._delivered(cycle, worker, batch, rid, n)
        for worker, b in last.items():
            self.last_batch[cycle, worker] = b

    def _delivered(self, cycle: int, worker: str, batch: int, rid: str, n: int) -> None:
        seen = self.sightings.setdefault(n, [])
        if seen:
            self.duplicates += 1
            prev = seen[-1]
            if prev.record_id != rid:
                self.problem(f"record {n} changed id: {prev.record_id} then {rid}")
            if prev.cycle == cycle or prev.cycle not in self.killed:
                self.problem(f"record {n} delivered twice in cycle {cycle} without a crash")
            elif prev.batch != self.last_batch.get((prev.cycle, prev.worker)):
                self.problem(
                    f"record {n} delivered again in cycle {cycle} though its batch in cycle "
                    f"{prev.cycle} was not the last of {prev.worker} (not in flight at the kill)"
                )
        seen.append(_Sighting(cycle, worker, batch, rid))

    def report(
        self, cycles: int, lost: int, kills: dict[str, int], directory: str
    ) -> CrashLoopReport:
        """The :class:`CrashLoopReport` of what was checked."""
        problems = self.all_problems()
        return CrashLoopReport(
            cycles=cycles,
            records=len(self.returned),
            delivered=len(self.sightings),
            dead_lettered=len(self.dead),
            duplicates=self.duplicates,
            lost=lost,
            kills=dict(sorted(kills.items())),
            problems=problems,
            returned=frozenset(self.returned),
            directory=directory,
        )
