"""spoolkit.Queue side by side with its peers, in one run, on the same payloads.

Prints put/s and get+ack/s for spoolkit (fsync="interval", the default), pqueue,
persist-queue (file Queue and SQLiteAckQueue), queuelib FifoDiskQueue, diskcache Deque and a
raw loop of one os.write per framed record (the physical limit), each as a ratio to spoolkit;
then group commit with fsync="always" and put_many throughput. spoolkit runs with pqueue's
default of 100 records per chunk file, again with 1000, and with all the items in one chunk
(no rollover, the cost of a put away from the chunk files): a new chunk file costs one file
creation, whose latency varies widely between file systems, machines, and even directories of
one disk (printed before and after the run, which itself creates and deletes many files).

spoolkit, the raw loop and queuelib run ``--rounds`` times, interleaved, and report each
figure's median (a 20,000-item put takes about 50 ms, so one run swings with the machine's
noise); the slow peers run once, after them (their file traffic would slow the others' file
creations). ``--dir`` chooses where the queues live (default: the system
temporary directory); point it at the file system your spool will use.

    .venv/bin/python benchmarks/queue_bench.py [--items 20000] [--rounds 5] [--dir D] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rate, save, table

import spoolkit
from spoolkit.queue.framing import FIELDS, MAGIC, U32

Peer = Callable[[str, list[bytes]], tuple[float, float]]


@contextlib.contextmanager
def scratch(where: str | None = None) -> Iterator[str]:
    """A fresh directory for one run, under the run's root (or in ``where``, removed after).

    Afterwards its files are emptied, not removed: the root goes when the whole run ends. On
    ext4 without a journal (this VM's disk), a new file skips every inode of its block group
    freed in the last minute or more, so files created right after many were deleted nearby
    cost up to 20 times more (7 µs against 130 µs here): removing each run's files would slow
    the file creations of the runs after it. Emptying them frees their space and page cache
    but keeps their inodes.
    """
    d = tempfile.mkdtemp(prefix="spoolbench-", dir=where)
    try:
        yield d
    finally:
        gc.collect()  # a peer left for the collector must unmap its files before they shrink
        if where is not None:  # another file system (tmpfs), outside the root: remove it
            shutil.rmtree(d, ignore_errors=True)
        else:
            for root, _dirs, files in os.walk(d):
                for name in files:
                    with contextlib.suppress(OSError):
                        os.truncate(os.path.join(root, name), 0)


def stdlib_style(q: Any, items: list[bytes]) -> tuple[float, float]:
    """put every item, then get + task_done every item: the queue.Queue API."""
    put = rate(len(items), lambda: [q.put(x) for x in items])

    def drain() -> None:
        for _ in items:
            q.get()
            q.task_done()

    return put, rate(len(items), drain)


def bench_spoolkit(d: str, items: list[bytes]) -> tuple[float, float]:
    q = spoolkit.Queue(d)
    result = stdlib_style(q, items)
    q.close()
    return result


def bench_spoolkit_batch(d: str, items: list[bytes], chunksize: int = 100) -> tuple[float, float]:
    q = spoolkit.Queue(d, chunksize=chunksize)
    put = rate(len(items), lambda: [q.put(x) for x in items])

    def drain() -> None:
        n = 0
        while n < len(items):
            b = q.get_batch(500)
            q.ack(*b)
            n += len(b)

    got = rate(len(items), drain)
    q.close()
    return put, got


def bench_spoolkit_one_chunk(d: str, items: list[bytes]) -> tuple[float, float]:
    """get_batch+ack with every item in one chunk file: what a put costs without rollovers."""
    return bench_spoolkit_batch(d, items, chunksize=len(items))


def bench_raw(d: str, items: list[bytes]) -> tuple[float, float]:
    path = os.path.join(d, "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write_all() -> None:
        for i, x in enumerate(items):
            fields = FIELDS.pack(len(x), i, 0.0)
            # the frame as spoolkit builds it: one CRC call over a joined copy when that is cheaper
            crc = zlib.crc32(fields + x) if len(x) < 2048 else zlib.crc32(x, zlib.crc32(fields))
            os.write(fd, b"".join((MAGIC, fields, U32.pack(crc), b"\0\0\0\0", x)))

    put = rate(len(items), write_all)
    os.close(fd)
    rfd = os.open(path, os.O_RDWR)

    def read_all() -> None:
        pos = 0
        for _ in items:
            hdr = os.pread(rfd, 32, pos)
            n = int.from_bytes(hdr[4:8], "little")
            os.pread(rfd, n, pos + 32)
            os.pwrite(rfd, b"\1\1\1\1", pos + 28)  # the acknowledgement
            pos += 32 + n

    got = rate(len(items), read_all)
    os.close(rfd)
    return put, got


def bench_pqueue(d: str, items: list[bytes]) -> tuple[float, float]:
    import pqueue

    os.makedirs(os.path.join(d, "pq"))
    q = pqueue.Queue(os.path.join(d, "pq"), tempdir=d)
    return stdlib_style(q, items)


def bench_persist_file(d: str, items: list[bytes]) -> tuple[float, float]:
    import persistqueue

    q = persistqueue.Queue(os.path.join(d, "pf"), tempdir=d)
    return stdlib_style(q, items)


def bench_persist_sqlite_ack(d: str, items: list[bytes]) -> tuple[float, float]:
    import persistqueue

    q = persistqueue.SQLiteAckQueue(os.path.join(d, "ps"), multithreading=True)
    put = rate(len(items), lambda: [q.put(x) for x in items])

    def drain() -> None:
        for _ in items:
            q.ack(q.get(raw=True))

    return put, rate(len(items), drain)


def bench_queuelib(d: str, items: list[bytes]) -> tuple[float, float]:
    from queuelib import FifoDiskQueue

    q = FifoDiskQueue(os.path.join(d, "ql"))
    put = rate(len(items), lambda: [q.push(x) for x in items])
    got = rate(len(items), lambda: [q.pop() for _ in items])
    q.close()
    return put, got


def bench_diskcache(d: str, items: list[bytes]) -> tuple[float, float]:
    import diskcache

    q = diskcache.Deque(directory=os.path.join(d, "dc"))
    put = rate(len(items), lambda: [q.append(x) for x in items])
    got = rate(len(items), lambda: [q.popleft() for _ in items])
    return put, got


PEERS: dict[str, Peer] = {
    "spoolkit (get+task_done)": bench_spoolkit,
    "spoolkit (get_batch+ack)": bench_spoolkit_batch,
    "spoolkit (get_batch+ack, chunksize=1000)": functools.partial(
        bench_spoolkit_batch, chunksize=1000
    ),
    "spoolkit (get_batch+ack, one chunk: no rollover)": bench_spoolkit_one_chunk,
    "raw os.write loop": bench_raw,
    "pqueue": bench_pqueue,
    "persist-queue Queue": bench_persist_file,
    "persist-queue SQLiteAckQueue": bench_persist_sqlite_ack,
    "queuelib FifoDiskQueue": bench_queuelib,
    "diskcache Deque": bench_diskcache,
}


SLOW = frozenset(
    {"pqueue", "persist-queue Queue", "persist-queue SQLiteAckQueue", "diskcache Deque"}
)
"""Peers that run once: tens to thousands of times slower, their ratios do not need a median."""


def run_peer(fn: Peer, items: list[bytes]) -> tuple[float, float]:
    with scratch() as d:
        return fn(d, items)


def side_by_side(size: int, n: int, peers: dict[str, Peer], rounds: int) -> dict[str, Any]:
    """Each peer's median put/s and get+ack/s over ``rounds`` interleaved runs (one if slow).

    The slow peers run after the rounds of the others: they create and delete a file or more
    per operation, and on ext4 that traffic slows the file creations that follow it in nearby
    directories (here by about a tenth of spoolkit's put rate at 100 records per chunk).
    """
    items = [os.urandom(size) for _ in range(n)]
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            if name not in SLOW:
                runs[name].append(run_peer(fn, items))
    for name, fn in peers.items():
        if name in SLOW:
            runs[name].append(run_peer(fn, items))
    results = {
        name: (statistics.median(p for p, _ in rs), statistics.median(g for _, g in rs))
        for name, rs in runs.items()
    }
    base_put, base_get = results["spoolkit (get+task_done)"]
    rows = [
        [
            name,
            f"{p:,.0f}",
            f"{g:,.0f}",
            f"{p / base_put:.3f}x",
            f"{g / base_get:.3f}x",
        ]
        for name, (p, g) in results.items()
    ]
    print(
        table(
            f"{n:,} items of {size} bytes (fsync=interval), median of {rounds} runs",
            ["queue", "put/s", "get+ack/s", "put vs spoolkit", "get+ack vs spoolkit"],
            rows,
        )
    )
    return {name: {"put": p, "get_ack": g} for name, (p, g) in results.items()}


def durable_puts(threads: int, per_thread: int, where: str | None = None) -> float:
    """fsync="always": puts/s of ``threads`` threads putting ``per_thread`` records each."""
    payload = os.urandom(100)
    with scratch(where) as d:
        q = spoolkit.Queue(d, fsync="always")

        def worker() -> None:
            for _ in range(per_thread):
                q.put(payload)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        per_s = threads * per_thread / (time.perf_counter() - t0)
        q.close()
    return per_s


NATIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "group_commit.c")


def build_native(out_dir: str) -> str | None:
    """Compile ``native/group_commit.c`` into ``out_dir``; None (said why) if it cannot be."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler: the native group-commit rows are left out\n")
        return None
    exe = os.path.join(out_dir, "group_commit")
    done = subprocess.run(
        [cc, "-O2", "-pthread", "-o", exe, NATIVE], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"building {NATIVE} failed, native rows left out:\n{done.stderr}")
        return None
    return exe


def native_puts(exe: str, threads: int, per_thread: int) -> float:
    """Durable records/s of the C group commit (see native/group_commit.c)."""
    with scratch() as d:
        out = subprocess.run(
            [exe, d, str(threads), str(per_thread)], capture_output=True, text=True, check=True
        )
    return float(out.stdout)


def group_commit(n_threads: int, per_thread: int, rounds: int) -> dict[str, float]:
    """One thread's durable put rate (one fsync each) vs ``n_threads`` sharing fsyncs; the
    median of ``rounds`` interleaved runs of each.

    Two references run beside them. Where ``/dev/shm`` (tmpfs) exists, ``n_threads`` there: an
    fsync costs next to nothing on tmpfs, so that rate is what waking the threads alone
    allows. And where a C compiler is at hand, the same with ``native/group_commit.c``: 1 and
    ``n_threads`` threads appending to a file and sharing fdatasyncs without an interpreter,
    what this disk and kernel allow.
    """
    many = f"{n_threads} thread(s)"
    runs: dict[str, list[float]] = {"1 thread(s)": [], many: []}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if shm:
        runs[f"{many}, fsync free (tmpfs)"] = []
    with tempfile.TemporaryDirectory(prefix="spoolbench-native-") as native_dir:
        exe = build_native(native_dir)
        if exe:
            runs["native C, 1 thread"] = []
            runs[f"native C, {n_threads} threads"] = []
        for _ in range(rounds):
            for name, rates in runs.items():
                threads = 1 if "1 thread" in name else n_threads
                if exe and name.startswith("native"):
                    rates.append(native_puts(exe, threads, per_thread))
                else:
                    where = shm if "tmpfs" in name else None
                    rates.append(durable_puts(threads, per_thread, where))
    out = {name: statistics.median(rates) for name, rates in runs.items()}
    rows = []
    for name, per_s in out.items():
        base = out["native C, 1 thread"] if name.startswith("native") else out["1 thread(s)"]
        rows.append([name, f"{per_s:,.0f}", f"{per_s / base:.2f}x"])
    print(
        table(
            f'fsync="always": durable puts/s (group commit), median of {rounds} runs',
            ["putting threads", "puts/s", "vs 1 thread (of its kind)"],
            rows,
        )
    )
    return out


def median_us(what: str, op: Callable[[str, int], object], samples: int = 200) -> float:
    """Median µs of ``op(directory, i)`` over ``samples`` calls in a fresh directory; printed."""
    times = []
    with scratch() as d:
        for i in range(samples):
            t0 = time.perf_counter()
            op(d, i)
            times.append(time.perf_counter() - t0)
    us = sorted(times)[samples // 2] * 1e6
    print(f"{what} (median): {us:,.0f} µs\n")
    return us


def fsync_latency_us() -> float:
    """One 100-byte append + fsync on this disk: what group commit amortizes."""

    def append_and_fsync(d: str, _i: int) -> None:
        fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"x" * 100)
            os.fsync(fd)
        finally:
            os.close(fd)

    return median_us("fsync latency (100-byte append + fsync)", append_and_fsync)


def file_create_latency_us() -> float:
    """Creating one file here: a new chunk file costs at least this, once per ``chunksize``
    puts (100 by default, as in pqueue)."""

    def create(d: str, i: int) -> None:
        os.close(os.open(os.path.join(d, f"f{i}"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))

    return median_us("file creation latency", create)


def put_many(n: int) -> dict[str, float]:
    out = {}
    items = [os.urandom(100) for _ in range(n)]
    for ser in ("raw", "pickle"):
        with scratch() as d:
            q = spoolkit.Queue(d, serializer=ser, chunksize=10_000)
            out[ser] = rate(n, lambda q=q: q.put_many(items))
            q.close()
    print(
        table(
            f"put_many of {n:,} items of 100 bytes",
            ["serializer", "items/s"],
            [[k, f"{v:,.0f}"] for k, v in out.items()],
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of the fast peers (median)")
    parser.add_argument("--dir", help="where the queues live (default: the temporary directory)")
    parser.add_argument("--quick", action="store_true", help="fewer items, one round")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.items
    rounds = 1 if args.quick else args.rounds
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/queue_bench.py", *sys.argv[1:]]),
        "dir": args.dir or tempfile.gettempdir(),
        "rounds": rounds,
    }
    with tempfile.TemporaryDirectory(prefix="spoolbench-run-", dir=args.dir) as root:
        tempfile.tempdir = root  # every scratch directory of the run goes there
        try:
            run_all(results, n, rounds, args.quick)
        finally:
            tempfile.tempdir = None
    print("results written to", save("queue_bench", results))


def run_all(results: dict[str, Any], n: int, rounds: int, quick: bool) -> None:
    """Every measurement of the run, into ``results``."""
    results["file_create_latency_us"] = file_create_latency_us()
    results["100B"] = side_by_side(100, n, PEERS, rounds)
    results["4KiB"] = side_by_side(4096, n, PEERS, rounds)
    results["file_create_latency_us_after"] = file_create_latency_us()
    results["fsync_latency_us"] = fsync_latency_us()
    results["group_commit"] = group_commit(8, 200 if quick else 1000, rounds)
    results["put_many"] = put_many(20_000 if quick else 200_000)


if __name__ == "__main__":
    main()
