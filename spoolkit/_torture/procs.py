"""The multi-process crash loop: several writers and a consumer on one spool, killed at random.

``python -m spoolkit.torture procs --writers 4 --cycles 20`` prints one line,
``writers=4 cycles=20 processes=N kills=N exits=N records=N delivered=N dead_lettered=N
duplicates=N lost=N``, and exits 1 if a record was lost or an invariant broke.

Each cycle starts ``writers`` writer processes and one consumer process
(:mod:`spoolkit._torture.procs_child`) on the same spool directory, which survives every cycle.
Writers take turns at four shapes: a producer-only ``Spool(consume=False)``, a producer-only
``SpoolHandler``, a ``Spool`` that also delivers, and a ``SpoolHandler`` that also delivers.
Every process started gets, at random, a kill aimed after its m-th event of a phase it goes
through (put, put returned, chunk rollover, lane opened, lane handed over, sink write, ack,
chunk cleanup, dead-lettering) or at a random instant; the SIGKILL lands at once or within 2 ms,
and a replacement starts in its place (writers put new records). Once every writer has put its
records, the cycle lingers a moment (handovers and adoptions happen), then each process still
running is either SIGKILLed or told to exit normally (no ``close()``: its exit hooks stop it).
With every process of the cycle ended, the ledger (:mod:`spoolkit._torture.procs_ledger`)
checks that every record whose put returned is delivered, dead-lettered or still waiting in a
lane. A last process, never killed, drains every lane; then nothing may wait any more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from spoolkit._torture.child import torture_item
from spoolkit._torture.procs_ledger import ProcsLedger, ProcsReport
from spoolkit.queue.meta import META
from spoolkit.tools.inspect import dead_letters, peek

__all__ = ["ProcsReport", "main", "run_procs_loop"]

SHAPES = (("spool", False), ("handler", False), ("spool", True), ("handler", True))
WRITER_PHASES = ("@put", "P", "@roll", "@open", "@handoff", "anytime")
CONSUMER_PHASES = ("@write", "@ack", "@cleanup", "@dead", "@open", "anytime")
_STALL = 60.0  # seconds without a word from any process before the cycle counts as hung
_EXIT_WAIT = 60.0  # seconds a process told to exit may take (its spool delivers for 5 s)
_UNCLEAN = (b"Traceback", b"Logging error")


@dataclass
class _Proc:
    """One process started by the loop."""

    instance: int
    role: str  # "writer", "consumer" or "drain"
    slot: int  # the writer's place (its shape), -1 for the consumer
    popen: subprocess.Popen[bytes]
    consume: bool
    stdin: IO[bytes]
    buf: bytes = b""
    counts: dict[str, int] = field(default_factory=dict)
    phase: str | None = None  # the kill aimed at this process: after `target` `phase` events
    target: int = 0
    delay: float = 0.0
    kill_at: float | None = None
    idle: bool = False
    ended: bool = False
    killed: bool = False
    told_to_exit: bool = False
    said: set[str] = field(default_factory=set)
    lines: list[bytes] = field(default_factory=list)
    why: str = ""  # what the kill was aimed after


class _Loop:
    def __init__(self, directory: str, seed: int, config: dict[str, Any]) -> None:
        self.dir = directory
        self.rng = random.Random(seed)  # noqa: S311 - kill timing, not cryptography
        self.ledger = ProcsLedger()
        self.spool = os.path.join(directory, "spool")
        for sub in ("logs", "stderr", "events"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
        self.config = {"spool": self.spool, **config}
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.instances = 0
        self.kills: dict[str, int] = {}
        self.exits = 0
        self.procs: dict[int, _Proc] = {}  # stdout fd -> running process
        self.cycle_open = False  # processes that end are replaced
        self.cycle_plans = 0  # kills aimed in this cycle

    # -- processes -----------------------------------------------------------------------------

    def _most(self, phase: str) -> int:
        c = self.config
        records, batch = int(c["records"]), int(c["batch_size"])
        chunk = max(8, int(c["max_bytes"]) // 8192)
        most = {
            "@put": records // 2,
            "P": records // 2,
            "@roll": records // chunk,
            "@open": 2,
            "@handoff": 1,
            "@write": max(1, records // batch),
            "@ack": max(1, records // batch),
            "@cleanup": 2,
            "@dead": 1,
        }
        return max(1, most.get(phase, 1))

    def start(self, role: str, slot: int, *, budget: bool) -> _Proc:
        """Start a process; give it a kill if ``budget`` allows, at random."""
        self.instances += 1
        n = self.instances
        kind, consume = SHAPES[slot % len(SHAPES)] if slot >= 0 else ("spool", True)
        config = dict(
            self.config,
            role=role,
            kind=kind,
            consume=consume,
            first=n * 1_000_000,
            seed=n,
            log=os.path.join(self.dir, "logs", f"{n}.log"),
        )
        with open(os.path.join(self.dir, "stderr", f"{n}.txt"), "wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "spoolkit._torture.procs_child", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
            )
        assert popen.stdout is not None
        assert popen.stdin is not None
        proc = _Proc(n, role, slot, popen, consume, popen.stdin)
        rng = self.rng
        if budget and role != "drain" and rng.random() < self.config["kill_rate"]:
            self.cycle_plans += 1
            phases: tuple[str, ...] = WRITER_PHASES if role == "writer" else ()
            phases += CONSUMER_PHASES if consume else ()
            proc.phase = rng.choice(sorted(set(phases)))
            proc.target = rng.randint(1, self._most(proc.phase))
            proc.delay = 0.0 if rng.random() < 0.5 else rng.uniform(0, 0.002)
        self.procs[popen.stdout.fileno()] = proc
        return proc

    def _kill(self, proc: _Proc, why: str) -> None:
        if proc.killed or proc.ended:
            return
        os.kill(proc.popen.pid, signal.SIGKILL)
        proc.killed = True
        proc.why = why
        self.ledger.killed.add(proc.instance)
        self.kills[why] = self.kills.get(why, 0) + 1

    def _line(self, proc: _Proc, line: bytes, now: float) -> None:
        kind = self.ledger.child_line(proc.instance, line)
        proc.lines.append(line)
        proc.said.add(kind)
        if kind == "@idle":
            proc.idle = True
        elif kind == "@stopped" and proc.consume and line != b"@stopped clean=True":
            self.ledger.cut_short.add(proc.instance)  # its stop abandoned batches in flight
        if proc.phase is None or proc.kill_at is not None or proc.killed:
            return
        if proc.phase == "anytime":
            proc.kill_at = now + self.rng.uniform(0, 0.3)
        elif kind == proc.phase:
            proc.counts[kind] = proc.counts.get(kind, 0) + 1
            if proc.counts[kind] >= proc.target:
                proc.kill_at = now + proc.delay

    def _read(self, proc: _Proc, data: bytes, now: float) -> None:
        *lines, proc.buf = (proc.buf + data).split(b"\n")
        for line in lines:
            if line:
                self._line(proc, line, now)

    def _ended(self, proc: _Proc) -> None:
        """Reap ``proc`` once its stdout closed: its remaining lines, exit code, sink log."""
        assert proc.popen.stdout is not None
        self.procs.pop(proc.popen.stdout.fileno(), None)
        if proc.buf:  # a last line without its newline: written whole before the end
            self._line(proc, proc.buf, time.monotonic())
            proc.buf = b""
        proc.popen.stdout.close()
        with contextlib.suppress(OSError):  # the process is gone: nothing to flush to
            proc.stdin.close()
        code = proc.popen.wait()
        proc.ended = True
        fate = f"killed ({proc.why})" if proc.killed else f"exited {code}"
        with open(os.path.join(self.dir, "processes.txt"), "a") as f:
            f.write(
                f"{proc.instance} {proc.role} slot={proc.slot} consume={proc.consume} "
                f"{fate} lines={len(proc.lines)}\n"
            )
        with open(os.path.join(self.dir, "events", f"{proc.instance}.txt"), "wb") as f:
            f.write(b"".join(line + b"\n" for line in proc.lines))
        if proc.killed:
            if code != -signal.SIGKILL:
                self.ledger.problem(f"process {proc.instance} exited {code} before its kill")
        elif proc.told_to_exit or proc.role == "drain":
            stderr = self._stderr(proc)
            if code != 0 or any(word in stderr for word in _UNCLEAN):
                text = stderr[-1500:].decode(errors="replace")
                self.ledger.problem(
                    f"process {proc.instance} ({proc.role}) exited {code} at its end: {text}"
                )
        else:
            text = self._stderr(proc)[-1500:].decode(errors="replace")
            self.ledger.problem(f"process {proc.instance} exited {code} by itself: {text}")
        log = os.path.join(self.dir, "logs", f"{proc.instance}.log")
        if os.path.exists(log):
            with open(log, "rb") as f:
                data = f.read()
            # a torn last line was never acknowledged: not a delivery
            self.ledger.sink_lines(proc.instance, data[: data.rfind(b"\n") + 1])

    def _stderr(self, proc: _Proc) -> bytes:
        with open(os.path.join(self.dir, "stderr", f"{proc.instance}.txt"), "rb") as f:
            return f.read()

    def _pump(self, until: float | None) -> None:
        """Read every process's lines and land due kills, until ``until`` or a quiet spell."""
        last_word = time.monotonic()
        while self.procs:
            now = time.monotonic()
            for proc in list(self.procs.values()):
                if proc.kill_at is not None and now >= proc.kill_at:
                    proc.kill_at = None
                    self._kill(proc, proc.phase or "?")
                    self._replace(proc)
            if until is not None and now >= until:
                return
            if until is None and self._writers_idle():
                return
            due = [p.kill_at for p in self.procs.values() if p.kill_at is not None]
            wait = min([*due, until if until is not None else now + _STALL]) - now
            ready = select.select(list(self.procs), [], [], max(0.0, wait))[0]
            now = time.monotonic()
            if not ready and until is None and now - last_word >= _STALL:
                self.ledger.problem(f"no process said anything for {_STALL:.0f} s")
                return
            for fd in ready:
                proc = self.procs[fd]
                data = os.read(fd, 65536)
                last_word = now
                if data:
                    self._read(proc, data, now)
                else:
                    self._ended(proc)
                    if not (proc.killed or proc.told_to_exit or proc.role == "drain"):
                        self._replace(proc)

    def _writers_idle(self) -> bool:
        running = list(self.procs.values())
        return all(p.idle for p in running if p.role == "writer") and not any(
            p.kill_at is not None for p in running
        )

    def _replace(self, proc: _Proc) -> None:
        if self.cycle_open and proc.role != "drain":
            self.start(proc.role, proc.slot, budget=self._budget())

    def _budget(self) -> bool:
        return self.cycle_plans < int(self.config["max_kills"])

    # -- cycles --------------------------------------------------------------------------------

    def cycle(self) -> None:
        """Start the writers and the consumer; kill, replace; end every process."""
        rng = self.rng
        self.cycle_open = True
        self.cycle_plans = 0
        self.start("consumer", -1, budget=True)
        for slot in range(int(self.config["writers"])):
            self.start("writer", slot, budget=True)
        self._pump(None)
        self._pump(time.monotonic() + rng.uniform(0, self.config["linger"]))
        self.cycle_open = False
        self._end_all()

    def _end_all(self) -> None:
        """SIGKILL or tell to exit every process still running; wait until all ended."""
        rng = self.rng
        for proc in list(self.procs.values()):
            if proc.killed:
                continue
            if rng.random() < 0.5:
                self._kill(proc, "end")
                continue
            proc.told_to_exit = True
            proc.phase, proc.kill_at = None, None  # no kill aimed any more: it ends by itself
            self.exits += 1
            try:
                proc.stdin.write(b"exit\n")
                proc.stdin.flush()
            except BrokenPipeError:  # it ended already: reaped below
                pass
        deadline = time.monotonic() + _EXIT_WAIT
        while self.procs:
            now = time.monotonic()
            if now >= deadline:
                for proc in list(self.procs.values()):
                    self.ledger.problem(f"process {proc.instance} did not exit in time")
                    self._kill(proc, "hung")
                deadline = now + _EXIT_WAIT
            ready = select.select(list(self.procs), [], [], max(0.0, deadline - now))[0]
            for fd in ready:
                proc = self.procs[fd]
                data = os.read(fd, 65536)
                if data:
                    self._read(proc, data, now)
                else:
                    self._ended(proc)

    def drain(self, timeout: float) -> None:
        """Start the final consumer, never killed; it delivers every lane and exits."""
        self._end_drain(self.start("drain", -1, budget=False), timeout)

    def _end_drain(self, proc: _Proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout + _EXIT_WAIT
        while self.procs and time.monotonic() < deadline:
            ready = select.select(list(self.procs), [], [], deadline - time.monotonic())[0]
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    self._read(proc, data, time.monotonic())
                else:
                    self._ended(proc)
        if not proc.ended:
            self.ledger.problem("the final drain did not end in time")
            self._kill(proc, "hung")
            self._end_all()
        elif "@done" not in proc.said:
            self.ledger.problem("the final drain did not deliver everything in time")

    def check(self, cycle: int, *, final: bool) -> set[int]:
        """What waits in every lane and in the dead letters, against the ledger."""
        pending: set[int] = set()
        dead: set[int] = set()
        if os.path.exists(os.path.join(self.spool, META)):  # peek and dead see every lane
            pending = _numbers(r.item for r in peek(self.spool, 1 << 40))
            dead = _numbers(d.item for d in dead_letters(self.spool))
        return self.ledger.check_kept(cycle, pending, dead, final=final)


def _numbers(items: Iterable[Any]) -> set[int]:
    out: set[int] = set()
    for spooled in items:
        item = torture_item(spooled)
        if isinstance(item, dict) and "n" in item:
            out.add(int(item["n"]))
    return out


def run_procs_loop(
    directory: str | os.PathLike[str],
    *,
    writers: int = 4,
    cycles: int = 10,
    seed: int = 0,
    records: int = 150,
    kill_rate: float = 0.5,
    max_kills: int | None = None,
    linger: float = 1.5,
    workers: int = 2,
    batch_size: int = 16,
    max_bytes: int = 256 * 1024,
    poison_every: int = 31,
    transient_every: int = 13,
    drain_timeout: float = 60.0,
) -> ProcsReport:
    """Run ``cycles`` cycles of writers and a consumer on one spool, then a final drain.

    Args:
        directory: where the spool (``spool/``), each delivering process's sink log
            (``logs/<n>.log``) and each process's stderr (``stderr/<n>.txt``) live.
        writers: writer processes running at once.
        cycles: cycles before the final drain.
        seed: seeds the shapes' kills and their timing (each process's data is seeded by its
            number).
        records: records each writer process puts.
        kill_rate: the chance that a process started gets a kill aimed at one of its phases.
        max_kills: aimed kills per cycle at most (each starts a replacement); default
            ``writers + 1``.
        linger: the most seconds a cycle goes on once the writers put everything (lanes are
            handed over and adopted meanwhile), before every process is ended.
        workers: each delivering process's workers.
        batch_size: their batch size.
        max_bytes: each lane's cap; its chunk files hold ``max_bytes // 8192`` records.
        poison_every: records whose number is a multiple of it are refused for good
            (dead-lettered, in the dead letters every process shares); 0 for none.
        transient_every: the first attempt of a batch starting with a multiple of it fails
            transiently; 0 for none.
        drain_timeout: the most seconds the final drain may take.

    Returns:
        The report; :attr:`ProcsReport.ok` says whether every invariant held.
    """
    loop = _Loop(
        os.fspath(directory),
        seed,
        {
            "writers": writers,
            "records": records,
            "kill_rate": kill_rate,
            "max_kills": writers + 1 if max_kills is None else max_kills,
            "linger": linger,
            "workers": workers,
            "batch_size": batch_size,
            "max_bytes": max_bytes,
            "poison_every": poison_every,
            "transient_every": transient_every,
            "drain_timeout": drain_timeout,
        },
    )
    for cycle in range(cycles):
        loop.cycle()
        loop.check(cycle, final=False)
    loop.drain(drain_timeout)
    lost = loop.check(cycles, final=True)
    ledger = loop.ledger
    duplicates = ledger.duplicates()
    return ProcsReport(
        cycles=cycles,
        writers=writers,
        processes=loop.instances,
        kills=dict(sorted(loop.kills.items())),
        exits=loop.exits,
        cut_short=len(ledger.cut_short),
        records=len(ledger.returned),
        delivered=len(ledger.sightings),
        dead_lettered=len(ledger.dead),
        duplicates=duplicates,
        lost=len(lost),
        problems=ledger.all_problems(),
        directory=loop.dir,
    )


def main(argv: list[str]) -> int:
    """``python -m spoolkit.torture procs``: print the summary line; exit 1 unless all is well."""
    parser = argparse.ArgumentParser(
        prog="python -m spoolkit.torture procs",
        description="Several writer processes and a consumer on one spool, killed at random.",
    )
    parser.add_argument("--writers", type=int, default=4, help="writers at once (default 4)")
    parser.add_argument("--cycles", type=int, default=10, help="cycles (default 10)")
    parser.add_argument("--records", type=int, default=150, help="records per writer process")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kills")
    parser.add_argument("--dir", help="working directory, kept (default: a temporary one)")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spoolkit-procs-") as temp:
        report = run_procs_loop(
            opts.dir or temp,
            writers=opts.writers,
            cycles=opts.cycles,
            records=opts.records,
            seed=opts.seed,
        )
    for text in report.problems:
        print(text, file=sys.stderr)
    print(report.line())
    return 0 if report.ok else 1
