"""The load test: 8 producers, 4 workers, a sink failing 20% of batches, for a sustained run.

``python -m spoolkit.torture load --seconds 300`` prints one line of figures and exits 1 if
a record was lost, the backlog did not drain, or memory grew. Run by ``tests/torture``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.testing import FlakySink

__all__ = ["LoadReport", "main", "run_load"]

_SAMPLE_EVERY = 0.25  # seconds between two RSS samples
_GROWTH_SLACK = 16 << 20  # bytes the second half's peak may exceed the first half's by


@dataclass
class LoadReport:
    """Figures of one load run.

    Attributes:
        seconds: how long the producers ran.
        records: records put.
        delivered: distinct records the sink accepted.
        dead_lettered: records in the dead letters.
        lost: records put and neither delivered nor dead-lettered.
        drained: the backlog was empty within the drain timeout after the producers stopped.
        drain_seconds: how long that took.
        failed_writes: sink calls that failed (the 20%).
        peak_rss: the highest resident set size sampled, in bytes.
        first_half_peak: the highest sample of the run's first half (after warm-up).
        second_half_peak: the highest sample of its second half.
        max_backlog: the most records waiting at a sample.
    """

    seconds: float
    records: int
    delivered: int
    dead_lettered: int
    lost: int
    drained: bool
    drain_seconds: float
    failed_writes: int
    peak_rss: int
    first_half_peak: int
    second_half_peak: int
    max_backlog: int

    @property
    def records_per_second(self) -> float:
        """Records put and delivered per second of the producers' run."""
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def memory_flat(self) -> bool:
        """The second half's peak is at most 16 MiB above the first half's."""
        return self.second_half_peak <= self.first_half_peak + _GROWTH_SLACK

    @property
    def ok(self) -> bool:
        """Nothing lost, the backlog drained, memory stayed flat."""
        return self.lost == 0 and self.drained and self.memory_flat

    def line(self) -> str:
        """One line of figures."""
        mib = 1 << 20
        return (
            f"seconds={self.seconds:.0f} records={self.records} "
            f"records_per_s={self.records_per_second:.0f} lost={self.lost} "
            f"dead_lettered={self.dead_lettered} failed_writes={self.failed_writes} "
            f"drained={self.drained} drain_s={self.drain_seconds:.1f} "
            f"max_backlog={self.max_backlog} peak_rss_mib={self.peak_rss / mib:.1f} "
            f"rss_halves_mib={self.first_half_peak / mib:.1f}/{self.second_half_peak / mib:.1f}"
        )


def rss_bytes() -> int:
    """This process's resident set size now (``VmRSS``), or its peak where /proc is missing."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _SeenSink:
    """Marks each delivered record number in a byte array: one byte per record, no objects."""

    def __init__(self) -> None:
        self.seen = bytearray()
        self._lock = threading.Lock()

    def write(self, batch: Sequence[Record]) -> None:
        """Mark the batch's numbers."""
        with self._lock:
            seen = self.seen
            for r in batch:
                n = r.item
                if n >= len(seen):
                    seen.extend(bytes(max(n + 1 - len(seen), 1 << 16)))
                seen[n] = 1


def run_load(
    directory: str | os.PathLike[str],
    *,
    seconds: float = 30.0,
    producers: int = 8,
    workers: int = 4,
    fail_rate: float = 0.2,
    drain_timeout: float = 120.0,
    max_bytes: int | None = 16 << 20,
) -> LoadReport:
    """Put records from ``producers`` threads for ``seconds`` into a spool whose sink fails.

    Args:
        directory: the spool directory.
        seconds: how long the producers put.
        producers: producer threads.
        workers: the spool's workers.
        fail_rate: the share of sink calls that fail (transiently: retried).
        drain_timeout: the most seconds to wait for the backlog to drain afterwards.
        max_bytes: the spool's cap; producers block at it (``when_full="block"``), so a
            backlog the sink cannot keep up with stays bounded, as in production.

    Returns:
        The figures.
    """
    seen = _SeenSink()
    sink = FlakySink(fail_rate, seed=7, inner=seen)
    retry = RetryPolicy(max_attempts=60, initial_wait=0.001, max_wait=0.02, jitter=0.001)
    counter = itertools.count()  # next() is atomic under the GIL: unique numbers
    stop = threading.Event()
    samples: list[tuple[float, int, int]] = []
    with Spool(
        directory, sink, workers=workers, batch_size=200, retry=retry, max_bytes=max_bytes
    ) as spool:

        def produce() -> None:
            put, take = spool.put, counter.__next__
            while not stop.is_set():
                for _ in range(100):
                    put(take())

        def sample() -> None:
            while not stop.wait(_SAMPLE_EVERY):
                samples.append((time.monotonic(), rss_bytes(), spool.stats().backlog))

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        sampler = threading.Thread(target=sample)
        start = time.monotonic()
        for t in (*threads, sampler):
            t.start()
        stop.wait(seconds)  # the run's length, not a synchronisation
        stop.set()
        for t in (*threads, sampler):
            t.join()
        elapsed = time.monotonic() - start
        drained = spool.flush(drain_timeout)
        drain_seconds = time.monotonic() - start - elapsed
        dead = [int(d.record.item) for d in spool.dead_letters.list()]
    records = next(counter)
    marks = seen.seen[:records]
    delivered = marks.count(1)
    dead_set = set(dead)
    lost = sum(1 for n, m in enumerate(marks) if not m and n not in dead_set)
    lost += max(0, records - len(marks))  # never marked at all
    warm = start + min(2.0, elapsed / 10)
    middle = (warm + start + elapsed) / 2
    first = [rss for t, rss, _ in samples if warm <= t < middle]
    second = [rss for t, rss, _ in samples if t >= middle]
    return LoadReport(
        seconds=elapsed,
        records=records,
        delivered=delivered,
        dead_lettered=len(dead),
        lost=lost,
        drained=drained,
        drain_seconds=drain_seconds,
        failed_writes=sink.failures,
        peak_rss=max((rss for _, rss, _ in samples), default=rss_bytes()),
        first_half_peak=max(first, default=0),
        second_half_peak=max(second, default=0),
        max_backlog=max((b for _, _, b in samples), default=0),
    )


def main(argv: list[str]) -> int:
    """``python -m spoolkit.torture load``: print the figures; exit 1 unless all is well."""
    parser = argparse.ArgumentParser(prog="python -m spoolkit.torture load")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", help="spool directory (default: a temporary one)")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolkit-load-") as temp:
        report = run_load(opts.dir or temp, seconds=opts.seconds)
    print(report.line())
    return 0 if report.ok else 1
