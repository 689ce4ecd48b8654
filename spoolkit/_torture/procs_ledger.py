"""What the multi-process crash loop knows and checks: records put and delivered, per process.

Several processes write one spool and several may deliver it, so "the batch in flight at the
kill" is tracked per process instance (every process started gets a number of its own) and
per worker thread of it. :class:`ProcsLedger` is fed every process's stdout lines, and the
log of each delivering process once that process has ended. Its invariants:

- no record is delivered that was never put (its number was never announced by ``@put``);
- no delivered record is corrupted (its fields match what was put, digest included), and its
  record id never changes;
- a record delivered more than once was, every time but at most one, in the last batch a
  worker of a SIGKILLed process logged (delivered, not yet acknowledged at the kill), or of a
  process whose stop at exit ran out of time (it abandons the batches in flight, as
  documented); no process delivers one record twice. (Processes run side by side, so this does
  not depend on the order in which their logs are read.)
- after every cycle, every record whose ``put`` returned is delivered, dead-lettered or still
  waiting in some lane; after the final drain, delivered or dead-lettered;
- a SpoolHandler never swallows a failed put (``F`` lines): with room in the spool and a
  working disk, every ``logger.info`` stores its record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spoolkit._torture.ledger import LedgerBase, sink_deliveries

__all__ = ["ProcsLedger", "ProcsReport"]


@dataclass
class ProcsReport:
    """The outcome of a multi-process crash loop.

    Attributes:
        cycles: cycles run (the final drain not counted).
        writers: writer processes running at once in each cycle.
        processes: processes started, replacements and the final drain included.
        kills: SIGKILLs sent, by the event they were aimed after (``end``: at the end of a
            cycle; ``anytime``: a random instant).
        exits: processes told to exit normally (no ``close()``: exit hooks only).
        cut_short: delivering processes whose stop at exit ran out of time (``exit_timeout``)
            and left batches in flight, to be delivered again.
        records: records whose ``put`` returned.
        delivered: distinct records a sink accepted.
        dead_lettered: distinct records in the dead letters.
        duplicates: deliveries beyond the first.
        lost: records whose ``put`` returned and that were neither delivered nor dead-lettered.
        problems: every broken invariant, described (at most 20, then a count).
        directory: where the spool, the sink logs and the processes' stderr are.
    """

    cycles: int = 0
    writers: int = 0
    processes: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    exits: int = 0
    cut_short: int = 0
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    directory: str = ""

    @property
    def ok(self) -> bool:
        """True when nothing was lost and no invariant broke."""
        return self.lost == 0 and not self.problems

    @property
    def killed(self) -> int:
        """SIGKILLs sent in all."""
        return sum(self.kills.values())

    def line(self) -> str:
        """The one-line summary ``python -m spoolkit.torture procs`` prints."""
        return (
            f"writers={self.writers} cycles={self.cycles} processes={self.processes} "
            f"kills={self.killed} exits={self.exits} records={self.records} "
            f"delivered={self.delivered} dead_lettered={self.dead_lettered} "
            f"duplicates={self.duplicates} lost={self.lost}"
        )


@dataclass(frozen=True, slots=True)
class _Sighting:
    instance: int
    worker: str
    batch: int
    record_id: str


class ProcsLedger(LedgerBase):
    """The checker of the multi-process crash loop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_short: set[int] = set()

    def child_line(self, instance: int, line: bytes) -> str:
        """Take one stdout line of process ``instance``; return its event name."""
        kind, *rest = line.decode(errors="replace").split(" ", 3)
        if kind in ("@put", "P", "F"):
            first, last = int(rest[0]), int(rest[1])
            numbers = range(first, last + 1)
            if kind == "F":
                why = rest[2] if len(rest) > 2 else "?"
                self.problem(f"process {instance}: the handler failed to store {first} ({why})")
            else:
                (self.attempted if kind == "@put" else self.returned).update(numbers)
        return kind

    def sink_lines(self, instance: int, log: bytes) -> None:
        """Check the complete batch lines process ``instance``'s sink logged (it has ended)."""
        where = f"process {instance}"
        found, last = sink_deliveries(log, where, self.attempted, self.problem)
        for worker, batch, rid, n in found:
            self.sightings.setdefault(n, []).append(_Sighting(instance, worker, batch, rid))
        for worker, b in last.items():
            self.last_batch[instance, worker] = b

    def _in_flight(self, s: _Sighting) -> bool:
        """Whether ``s`` was the last batch its worker logged before its process was killed
        or its spool's stop ran out of time (and abandoned the batches in flight)."""
        ended = s.instance in self.killed or s.instance in self.cut_short
        return ended and s.batch == self.last_batch.get((s.instance, s.worker))

    def duplicates(self) -> int:
        """Check every record delivered more than once; return the deliveries beyond the first."""
        extra = 0
        for n, seen in self.sightings.items():
            if len({s.record_id for s in seen}) > 1:
                self.problem(f"record {n} changed id: {sorted({s.record_id for s in seen})}")
            if len(seen) == 1:
                continue
            extra += len(seen) - 1
            instances = [s.instance for s in seen]
            if len(set(instances)) < len(instances):
                self.problem(f"record {n} delivered twice by one process: {seen}")
            elif sum(not self._in_flight(s) for s in seen) > 1:
                self.problem(
                    f"record {n} delivered {len(seen)} times, more than once outside a batch "
                    f"in flight at a kill: {seen}"
                )
        return extra
