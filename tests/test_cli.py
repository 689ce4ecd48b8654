"""The `spoolkit` command line: output, --json, exit codes and one-line errors."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

import spoolkit
from spoolkit import Queue, Record, Spool
from spoolkit.cli import EXIT_BUSY, EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, cli, json_safe
from spoolkit.errors import PermanentError
from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, Frame
from spoolkit.tools import inspect as insp
from tests.helpers.lane_holder import lane_holder

COMMANDS = [[], ["inspect"], ["peek"], ["fsck"], ["dead"], ["drain"], ["ship"], ["demo"]]


@pytest.fixture
def runner() -> CliRunner:
    """A click test runner with a wide terminal (rich tables do not wrap)."""
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A closed pickle spool: 12 records in chunks of 5, the first 2 acknowledged."""
    path = tmp_path / "spool"
    with Queue(path, chunksize=5) as q:
        q.put_many([{"n": i, "tags": {"a"}} if i == 3 else {"n": i} for i in range(12)])
        q.ack(*q.get_batch(2, timeout=0))
    return path


@pytest.fixture
def locked(spool: Path) -> Iterator[Path]:
    """The spool's lock held by this process, as its owner would hold it."""
    fd = os.open(spool / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, b"4242\n")
    yield spool
    os.close(fd)


def _damage_frame(path: Path, chunk: str, nth: int) -> Frame:
    data = bytearray((path / chunk).read_bytes())
    frames = [
        f
        for f in framing.scan(data, int(chunk[1:]), CHUNK_HEADER_SIZE, len(data), 1 << 20)
        if isinstance(f, Frame)
    ]
    data[frames[nth].offset + FRAME_HEADER_SIZE + 1] ^= 0x55
    (path / chunk).write_bytes(bytes(data))
    return frames[nth]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "spoolkit")
def test_every_command_has_help(runner: CliRunner, args: list[str]) -> None:
    """--help works on the group and on every command."""
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == EXIT_OK, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "spoolkit")
def test_every_command_help_shows_an_example(runner: CliRunner, args: list[str]) -> None:
    """--help of the group and of every command shows an example command line."""
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == EXIT_OK, result.output
    assert "Example" in result.output
    assert f"spoolkit {args[0] if args else ''}".strip() + " " in result.output.split("Example")[1]


def test_inspect_prints_a_summary(runner: CliRunner, spool: Path) -> None:
    """inspect shows the backlog, chunk files, dead letters and the owner state."""
    result = runner.invoke(cli, ["inspect", str(spool)])
    assert result.exit_code == EXIT_OK, result.output
    for text in ("10 record(s)", "chunk files", "dead letters", "not in use", "pickle"):
        assert text in result.output


def test_inspect_json(runner: CliRunner, spool: Path) -> None:
    """inspect --json prints the summary as data."""
    result = runner.invoke(cli, ["inspect", str(spool), "--json"])
    assert result.exit_code == EXIT_OK
    data = json.loads(result.output)
    assert data["backlog"] == 10
    assert data["chunk_files"] == 3
    assert data["dead_letters"] == 0
    assert data["locked"] is False
    assert data["oldest_age_seconds"] >= 0


def test_inspect_shows_the_owner_of_a_spool_in_use(runner: CliRunner, locked: Path) -> None:
    """inspect reads a locked spool and names the pid holding it."""
    result = runner.invoke(cli, ["inspect", str(locked), "--json"])
    assert result.exit_code == EXIT_OK
    data = json.loads(result.output)
    assert data["locked"] is True
    assert data["holder_pid"] == 4242


@pytest.mark.parametrize("command", ["inspect", "peek", "fsck"])
def test_a_bad_path_is_a_one_line_usage_error(
    runner: CliRunner, tmp_path: Path, command: str
) -> None:
    """A missing path exits 2 with one error line and no traceback."""
    result = runner.invoke(cli, [command, str(tmp_path / "nope")])
    assert result.exit_code == EXIT_USAGE
    assert result.output.strip().splitlines() == [
        f"Error: no such spool directory: {tmp_path}/nope"
    ]
    assert "Traceback" not in result.output


def test_a_file_is_not_a_spool(runner: CliRunner, tmp_path: Path) -> None:
    """A path that is a file exits 2 saying so."""
    (tmp_path / "f").write_text("x")
    result = runner.invoke(cli, ["peek", str(tmp_path / "f")])
    assert result.exit_code == EXIT_USAGE
    assert "is a file, not a spool directory" in result.output


def test_a_bad_option_is_a_usage_error(runner: CliRunner, spool: Path) -> None:
    """A negative -n exits 2 with click's message."""
    result = runner.invoke(cli, ["peek", str(spool), "-n", "-1"])
    assert result.exit_code == EXIT_USAGE
    assert "Invalid value" in result.output


def test_peek_prints_the_next_records(runner: CliRunner, spool: Path) -> None:
    """peek -n 2 shows the next two records' repr."""
    result = runner.invoke(cli, ["peek", str(spool), "-n", "2"])
    assert result.exit_code == EXIT_OK
    assert "{'n': 2}" in result.output
    assert "{'n': 4}" not in result.output


def test_peek_json_is_json_safe(runner: CliRunner, spool: Path) -> None:
    """peek --json carries JSON values as they are and the rest as their repr."""
    result = runner.invoke(cli, ["peek", str(spool), "--json", "-n", "3"])
    assert result.exit_code == EXIT_OK
    records = json.loads(result.output)
    assert [r["seq"] for r in records] == [2, 3, 4]
    uid = insp.inspect_spool(spool).uid
    assert [r["id"] for r in records] == [f"{uid}-{n}" for n in (2, 3, 4)]
    assert records[0]["item"] == {"n": 2}
    assert records[1]["item"] == {"n": 3, "tags": "{'a'}"}
    assert all(r["decode_error"] is None for r in records)


def test_json_safe_keeps_json_values_and_reprs_the_rest() -> None:
    """json_safe keeps JSON-native values and reprs anything else."""
    assert json_safe({"a": [1, 2.5, None, True, "s"]}) == {"a": [1, 2.5, None, True, "s"]}
    assert json_safe((1, b"x")) == [1, "b'x'"]
    assert json_safe({1: 2}) == "{1: 2}"


def test_peek_n_0_is_a_usage_error(runner: CliRunner, spool: Path) -> None:
    """peek -n 0 is a typo, never "no records waiting" on a backlog: exit 2 naming the range."""
    result = runner.invoke(cli, ["peek", str(spool), "-n", "0"])
    assert result.exit_code == EXIT_USAGE
    assert "0 is not in the range x>=1" in result.output
    assert "no records waiting" not in result.output


def test_inspect_shows_records_lost(runner: CliRunner, spool: Path) -> None:
    """A chunk file deleted between two others: inspect shows the records lost, as fsck does."""
    (spool / "q00001").unlink()
    data = json.loads(runner.invoke(cli, ["inspect", str(spool), "--json"]).output)
    assert data["lost_records"] == 5
    text = runner.invoke(cli, ["inspect", str(spool)]).output
    assert "5 record(s) lost: run `spoolkit fsck`" in text


def test_peek_of_an_empty_spool(runner: CliRunner, tmp_path: Path) -> None:
    """peek on a spool with nothing pending says so and exits 0."""
    with Queue(tmp_path / "e"):
        pass
    result = runner.invoke(cli, ["peek", str(tmp_path / "e")])
    assert result.exit_code == EXIT_OK
    assert "no records waiting" in result.output


def test_fsck_of_a_clean_spool_exits_0(runner: CliRunner, spool: Path) -> None:
    """fsck on an undamaged spool says every checksum verified."""
    result = runner.invoke(cli, ["fsck", str(spool)])
    assert result.exit_code == EXIT_OK
    assert "every checksum verified" in result.output


def test_fsck_reports_the_damaged_region_and_exits_1(runner: CliRunner, spool: Path) -> None:
    """fsck lists the exact damaged byte range and exits 1."""
    victim = _damage_frame(spool, "q00001", 2)
    result = runner.invoke(cli, ["fsck", str(spool), "--json"])
    assert result.exit_code == EXIT_PROBLEM
    data = json.loads(result.output)
    assert data["ok"] is False
    damage = [d for d in data["damage"] if "lost" not in d]
    assert damage == [{"chunk": "q00001", "start": victim.offset, "end": victim.end}]
    assert [d["lost"]["count"] for d in data["damage"] if "lost" in d] == [1]
    text = runner.invoke(cli, ["fsck", str(spool)])
    assert text.exit_code == EXIT_PROBLEM
    assert f"q00001 │ {victim.offset}" in text.output
    assert "--repair" in text.output


def test_fsck_repair_keeps_intact_records_and_exits_0(runner: CliRunner, spool: Path) -> None:
    """fsck --repair rewrites the damaged chunk; the spool then checks clean."""
    _damage_frame(spool, "q00001", 2)  # record 7
    result = runner.invoke(cli, ["fsck", str(spool), "--repair"])
    assert result.exit_code == EXIT_OK, result.output
    assert "repaired 1 chunk file(s): kept 4 record(s) (4 pending)" in result.output
    assert runner.invoke(cli, ["fsck", str(spool)]).exit_code == EXIT_OK
    with Queue(spool, chunksize=5) as q:
        items = [q.get_nowait()["n"] for _ in range(q.qsize())]
    assert items == [2, 3, 4, 5, 6, 8, 9, 10, 11]


def test_fsck_repair_json(runner: CliRunner, spool: Path) -> None:
    """fsck --repair --json reports what was rewritten and kept."""
    _damage_frame(spool, "q00000", 4)
    result = runner.invoke(cli, ["fsck", str(spool), "--repair", "--json"])
    assert result.exit_code == EXIT_OK
    data = json.loads(result.output)
    assert data["ok"] is False  # what was found
    assert data["repair"]["rewritten"] == ["q00000"]
    assert data["repair"]["kept_records"] == 4
    assert data["repair"]["kept_pending"] == 2
    assert data["repair"]["ok_after"] is True


def test_fsck_repair_skips_a_lane_in_use_naming_its_pid(runner: CliRunner, locked: Path) -> None:
    """fsck --repair leaves a lane another process holds alone and names the pid; with no
    damage anywhere that is a clean exit."""
    result = runner.invoke(cli, ["fsck", str(locked), "--repair"])
    assert result.exit_code == EXIT_OK, result.output
    # the lock is held, by this test process, under a pid that is not running: fsck says so
    assert "skipped lane 0: its lock is held, but pid 4242" in result.output
    data = json.loads(runner.invoke(cli, ["fsck", str(locked), "--repair", "--json"]).output)
    assert [s["lane"] for s in data["repair"]["skipped"]] == [0]
    assert data["live"] is True


def test_fsck_repair_exits_3_when_damage_is_left_in_a_lane_in_use(
    runner: CliRunner, locked: Path
) -> None:
    """Damage in a lane another process holds is not touched: exit 3 naming lane and pid."""
    _damage_frame(locked, "q00001", 2)
    before = (locked / "q00001").read_bytes()
    result = runner.invoke(cli, ["fsck", str(locked), "--repair"])
    assert result.exit_code == EXIT_BUSY
    assert "damage is left in lanes a live process holds: lane 0 (pid 4242)" in result.output
    assert (locked / "q00001").read_bytes() == before


def test_python_dash_m_runs_the_cli(spool: Path) -> None:
    """`python -m spoolkit` is the same command line."""
    out = subprocess.run(
        [sys.executable, "-m", "spoolkit", "inspect", str(spool), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["backlog"] == 10


def test_version_option(runner: CliRunner) -> None:
    """--version prints the package version."""
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == EXIT_OK
    assert spoolkit.__version__ in result.output


def _reject_odd(batch: Sequence[Record]) -> None:
    if any(r.item["n"] % 2 for r in batch):
        raise PermanentError(f"odd record {[r.item['n'] for r in batch]}")


@pytest.fixture
def dead_spool(tmp_path: Path) -> Path:
    """A stopped Spool whose sink refused the odd records of 0..5 (dead letters 1, 3, 5)."""
    path = tmp_path / "spool"
    spool = Spool(path, _reject_odd, workers=1, batch_size=1, serializer="json")
    spool.start()
    spool.put_many([{"n": i} for i in range(6)])
    assert spool.flush(10)
    spool.stop()
    return path


def test_dead_list(runner: CliRunner, dead_spool: Path) -> None:
    """dead PATH list shows each dead letter with its error."""
    result = runner.invoke(cli, ["dead", str(dead_spool), "list"])
    assert result.exit_code == EXIT_OK
    assert "PermanentError: odd record [3]" in result.output
    data = json.loads(runner.invoke(cli, ["dead", str(dead_spool), "list", "--json"]).output)
    assert [d["item"] for d in data] == [{"n": 1}, {"n": 3}, {"n": 5}]
    assert data[0]["error_type"] == "spoolkit.errors.PermanentError"


def test_dead_requeue_by_id(runner: CliRunner, dead_spool: Path) -> None:
    """dead PATH requeue --id puts that record back into the spool under its id."""
    ids = [
        d["id"]
        for d in json.loads(runner.invoke(cli, ["dead", str(dead_spool), "list", "--json"]).output)
    ]
    result = runner.invoke(cli, ["dead", str(dead_spool), "requeue", "--id", ids[1]])
    assert result.exit_code == EXIT_OK, result.output
    assert "requeued 1 dead letter(s); 2 left" in result.output
    (record,) = insp.peek(dead_spool)
    assert record.item == {"n": 3}
    assert ids[1].endswith(f"-{record.id}")


def test_dead_requeue_of_an_unknown_id_exits_1(runner: CliRunner, dead_spool: Path) -> None:
    """Requeueing an id that is not a dead letter says so and exits 1."""
    result = runner.invoke(cli, ["dead", str(dead_spool), "requeue", "--id", "nope-1"])
    assert result.exit_code == EXIT_PROBLEM
    assert "not dead letters" in result.output


def test_dead_purge_asks_first(runner: CliRunner, dead_spool: Path) -> None:
    """dead PATH purge asks for confirmation; --yes skips it."""
    refused = runner.invoke(cli, ["dead", str(dead_spool), "purge"], input="n\n")
    assert refused.exit_code == EXIT_PROBLEM
    assert len(insp.dead_letters(dead_spool)) == 3
    result = runner.invoke(cli, ["dead", str(dead_spool), "purge", "--yes"])
    assert result.exit_code == EXIT_OK
    assert "purged 3 dead letter(s); 0 left" in result.output
    assert insp.dead_letters(dead_spool) == []


def test_dead_requeue_leaves_the_letters_of_a_lane_in_use(
    runner: CliRunner, dead_spool: Path
) -> None:
    """requeue needs the lane a letter goes back to: a held lane keeps its letters, exit 3."""
    fd = os.open(dead_spool / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = runner.invoke(cli, ["dead", str(dead_spool), "requeue"])
    finally:
        os.close(fd)
    assert result.exit_code == EXIT_BUSY
    assert "requeued 0 dead letter(s); 3 left" in result.output
    assert "3 dead letter(s) left: their lanes are in use: lane 0 (pid " in result.output
    assert len(insp.dead_letters(dead_spool)) == 3


def test_dead_list_of_a_spool_without_dead_letters(runner: CliRunner, spool: Path) -> None:
    """A plain queue directory has no dead letters."""
    result = runner.invoke(cli, ["dead", str(spool), "list"])
    assert result.exit_code == EXIT_OK
    assert "no dead letters" in result.output


def test_drain_delivers_the_backlog_and_exits_0(runner: CliRunner, tmp_path: Path) -> None:
    """drain --to jsonl:// delivers every waiting record once and empties the spool."""
    with Queue(tmp_path / "s", chunksize=5) as q:
        q.put_many([{"n": i} for i in range(12)])
    target = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["drain", str(tmp_path / "s"), "--to", f"jsonl://{target}"])
    assert result.exit_code == EXIT_OK, result.output
    assert "delivered 12, dead-lettered 0" in result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert sorted(line["item"]["n"] for line in lines) == list(range(12))
    assert insp.inspect_spool(tmp_path / "s").backlog == 0


def test_drain_exits_1_when_a_record_is_dead_lettered(runner: CliRunner, spool: Path) -> None:
    """A record the sink refuses for good (a set is not JSON) is dead-lettered: exit 1."""
    target = spool.parent / "out.jsonl"
    result = runner.invoke(cli, ["drain", str(spool), "--to", f"jsonl://{target}"])
    assert result.exit_code == EXIT_PROBLEM
    assert "delivered 9, dead-lettered 1" in result.output
    assert f"see `spoolkit dead list {spool}`" in result.output
    assert [d.item["n"] for d in insp.dead_letters(spool)] == [3]


def test_drain_to_a_bad_url_is_a_usage_error(runner: CliRunner, spool: Path) -> None:
    """An unknown sink URL scheme exits 2 before the spool is touched."""
    result = runner.invoke(cli, ["drain", str(spool), "--to", "nope://x"])
    assert result.exit_code == EXIT_USAGE
    assert insp.inspect_spool(spool).backlog == 10


def test_drain_stops_at_its_timeout_and_exits_1(
    runner: CliRunner, spool: Path, httpserver: HTTPServer
) -> None:
    """A sink answering 503 leaves the records in the spool after --timeout."""
    httpserver.expect_request("/ingest").respond_with_data("busy", status=503)
    url = httpserver.url_for("/ingest")
    result = runner.invoke(cli, ["drain", str(spool), "--to", url, "--timeout", "0.3"])
    assert result.exit_code == EXIT_PROBLEM
    assert "timed out with 10 record(s) left" in result.output
    assert insp.inspect_spool(spool).backlog == 10


# -- --serializer: spools with a custom serializer (an encrypted one) --------------------------

KEY = bytes(range(32))
FACTORY_MODULE = "spoolkit_cli_test_keys"


@pytest.fixture
def encrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A closed spool of 6 records encrypted with KEY, one of them dead-lettered, and an
    importable module whose ``serializer()`` makes the serializer that reads it."""
    pytest.importorskip("cryptography")
    from spoolkit.crypto import EncryptedSerializer

    (tmp_path / f"{FACTORY_MODULE}.py").write_text(
        "from spoolkit.crypto import EncryptedSerializer\n"
        f"def serializer():\n    return EncryptedSerializer('json', {KEY!r})\n"
        "def nothing():\n    return 42\n"
        "def broken():\n    raise KeyError('SPOOL_KEY')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, FACTORY_MODULE, raising=False)
    path = tmp_path / "enc"

    def refuse_n0(batch: Sequence[Record]) -> None:
        if any(r.item == {"n": 0} for r in batch):
            raise PermanentError("n=0 refused")

    with Spool(
        path, refuse_n0, batch_size=1, workers=1, serializer=EncryptedSerializer("json", KEY)
    ) as s:
        s.put({"n": 0})
        assert s.flush(10)
    with Queue(path, serializer=EncryptedSerializer("json", KEY)) as q:
        q.put_many([{"n": i} for i in range(1, 6)])
    return path


def test_peek_reads_an_encrypted_spool_with_a_serializer_factory(
    runner: CliRunner, encrypted: Path
) -> None:
    """Without --serializer an encrypted spool's records are undecodable; with a factory
    that holds the key they are shown."""
    plain = runner.invoke(cli, ["peek", str(encrypted), "--json"])
    assert plain.exit_code == EXIT_OK, plain.output
    assert {r["item"] for r in json.loads(plain.output)} == {None}
    spec = f"{FACTORY_MODULE}:serializer"
    result = runner.invoke(cli, ["peek", str(encrypted), "--json", "--serializer", spec])
    assert result.exit_code == EXIT_OK, result.output
    assert [r["item"] for r in json.loads(result.output)] == [{"n": i} for i in range(1, 6)]


def test_dead_and_drain_work_on_an_encrypted_spool_with_a_serializer_factory(
    runner: CliRunner, encrypted: Path, tmp_path: Path
) -> None:
    """dead list shows the decrypted item, requeue puts it back under the key, and drain
    delivers all six records; without --serializer, requeue and drain refuse (exit 2)."""
    spec = ["--serializer", f"{FACTORY_MODULE}:serializer"]
    listed = runner.invoke(cli, ["dead", str(encrypted), "list", "--json", *spec])
    assert [d["item"] for d in json.loads(listed.output)] == [{"n": 0}]
    refused = runner.invoke(cli, ["dead", str(encrypted), "requeue"])
    assert refused.exit_code == EXIT_USAGE
    assert "--serializer package.module:factory" in refused.output
    assert runner.invoke(cli, ["dead", str(encrypted), "requeue", *spec]).exit_code == EXIT_OK
    target = tmp_path / "out.jsonl"
    url = f"jsonl://{target}"
    assert runner.invoke(cli, ["drain", str(encrypted), "--to", url]).exit_code == EXIT_USAGE
    result = runner.invoke(cli, ["drain", str(encrypted), "--to", url, *spec])
    assert result.exit_code == EXIT_OK, result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert sorted(line["item"]["n"] for line in lines) == list(range(6))
    assert insp.inspect_spool(encrypted).backlog == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("yaml", "want pickle, json, raw or 'package.module:factory'"),
        ("no_such_module_here:make", "cannot import 'no_such_module_here:make'"),
        (f"{FACTORY_MODULE}:nothing", "serializer 42 has no dumps()/loads()"),
        (f"{FACTORY_MODULE}:broken", "failed: KeyError: 'SPOOL_KEY'"),
    ],
)
def test_a_bad_serializer_option_is_a_one_line_usage_error(
    runner: CliRunner, encrypted: Path, spec: str, message: str
) -> None:
    """A --serializer that names no serializer exits 2 with one line saying why."""
    result = runner.invoke(cli, ["peek", str(encrypted), "--serializer", spec])
    assert result.exit_code == EXIT_USAGE
    assert message in result.output
    assert "Traceback" not in result.output


# -- lanes: a spool written by several processes -----------------------------------------------

DEADLINE = 60.0  # cross-process delivery on a busy 2-core machine


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.05)
    return True


def _lanes_of(path: Path, *counts: int, sink: Any = None) -> None:
    """Write lanes with Spools of this process, open at once (each takes a lane of its own):
    the k-th puts ``counts[k]`` records ``{"k": k, "n": n}``; all stopped after (draining
    if ``sink`` is given and they were started)."""
    spools = [Spool(path, sink, workers=1, batch_size=1, serializer="json") for _ in counts]
    try:
        for k, (s, count) in enumerate(zip(spools, counts, strict=True)):
            if sink is not None:
                s.start()
            s.put_many([{"k": k, "n": n} for n in range(count)])
        for s in spools:
            assert sink is None or s.flush(DEADLINE)
    finally:
        for s in spools:
            s.stop(drain=False)


def _cells(line: str) -> list[str]:
    """The cells of one row of a rich table."""
    return [c.strip() for c in line.split("│")[1:-1]]


def _jsonl_items(path: Path) -> list[Any]:
    return [json.loads(line)["item"] for line in path.read_text().splitlines()]


def test_inspect_lists_every_lane_and_who_holds_it(runner: CliRunner, tmp_path: Path) -> None:
    """inspect adds the lanes up and lists each with its backlog and the pid holding it."""
    path = tmp_path / "spool"
    with lane_holder(path, "hold", 2) as holder:
        _lanes_of(path, 3, 4)
        result = runner.invoke(cli, ["inspect", str(path)])
        assert result.exit_code == EXIT_OK, result.output
        assert f"3 lanes, 1 in use by pid {holder.pid}" in result.output
        assert "9 record(s)" in result.output
        rows = [_cells(line) for line in result.output.splitlines()]
        lane_rows = [(r[0], r[1], r[3], r[4]) for r in rows if len(r) == 5]
        assert lane_rows == [
            ("0", "2", "1", f"pid {holder.pid}"),
            ("1", "3", "1", "-"),
            ("2", "4", "1", "-"),
        ]
        data = json.loads(runner.invoke(cli, ["inspect", str(path), "--json"]).output)
        lanes = [(d["lane"], d["backlog"], d["locked"], d["holder_pid"]) for d in data["lanes"]]
        assert lanes == [(0, 2, True, holder.pid), (1, 3, False, None), (2, 4, False, None)]
        assert (data["backlog"], data["chunk_files"]) == (9, 3)
        assert (data["locked"], data["holder_pid"]) == (True, holder.pid)


def test_peek_shows_the_records_of_every_lane(runner: CliRunner, tmp_path: Path) -> None:
    """peek --json lists every lane's records, each with its lane and full record id."""
    path = tmp_path / "spool"
    _lanes_of(path, 2, 1, 3)
    records = json.loads(runner.invoke(cli, ["peek", str(path), "--json"]).output)
    assert sorted((r["lane"], r["item"]["n"]) for r in records) == [
        (0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2),
    ]  # fmt: skip
    assert all(r["item"]["k"] == r["lane"] for r in records)
    uids = {lane.number: lane.uid for lane in insp.lanes(path)}
    assert {r["record_id"] for r in records} == {f"{uids[r['lane']]}-{r['seq']}" for r in records}
    assert {r["chunk"] for r in records} == {"q00000", "lanes/1/q00000", "lanes/2/q00000"}
    text = runner.invoke(cli, ["peek", str(path), "-n", "10"]).output
    assert "{'k': 2, 'n': 2}" in text


def test_fsck_finds_damage_in_a_lane_and_counts_chunks_as_inspect(
    runner: CliRunner, tmp_path: Path
) -> None:
    """fsck names a damaged region of lane 2 as lanes/2/q...; its chunk count is inspect's
    (the dead letters' counted apart); --repair then leaves every lane clean, with no word of
    a spool in use."""
    path = tmp_path / "spool"
    _lanes_of(path, 2, 3, 4, sink=_reject_odd)  # dead letters: each lane's odd records
    _lanes_of(path, 2, 3, 4)  # the same lanes again, records left waiting
    victim = _damage_frame(path / "lanes" / "2", "q00000", 1)
    result = runner.invoke(cli, ["fsck", str(path), "--json"])
    assert result.exit_code == EXIT_PROBLEM
    data = json.loads(result.output)
    found = {"chunk": "lanes/2/q00000", "start": victim.offset, "end": victim.end}
    assert [d for d in data["damage"] if "lost" not in d] == [found]
    info = json.loads(runner.invoke(cli, ["inspect", str(path), "--json"]).output)
    on_disk = [*path.glob("q*"), *path.glob("lanes/*/q*")]
    assert data["chunk_files"] == info["chunk_files"] == len(on_disk)
    assert data["dead_chunk_files"] == len(list(path.glob("dead/q*"))) >= 1
    assert data["dead_letters"] == info["dead_letters"] == 1 + 1 + 2
    assert [d["damaged_regions"] for d in data["lanes"]] == [0, 0, 1]
    repaired = runner.invoke(cli, ["fsck", str(path), "--repair"])
    assert repaired.exit_code == EXIT_OK, repaired.output
    assert "repaired 1 chunk file(s)" in repaired.output
    assert "skipped" not in repaired.output
    assert "in use" not in repaired.output  # its own locks are not "another process"


def test_fsck_repair_repairs_free_lanes_and_names_the_held_one(
    runner: CliRunner, tmp_path: Path
) -> None:
    """With lane 0 held by a live process, --repair rewrites lane 1 and says lane 0 was
    skipped, with the pid."""
    path = tmp_path / "spool"
    with lane_holder(path, "hold", 3) as holder:
        _lanes_of(path, 5)
        _damage_frame(path / "lanes" / "1", "q00000", 2)
        result = runner.invoke(cli, ["fsck", str(path), "--repair"])
        assert result.exit_code == EXIT_OK, result.output
        assert f"skipped lane 0: in use by pid {holder.pid}" in result.output
        assert "repaired 1 chunk file(s): kept 4 record(s) (4 pending)" in result.output
        assert "every checksum verified after the repair" in result.output


@pytest.fixture
def dead_in_two_lanes(tmp_path: Path) -> Path:
    """Lanes 0 and 1 had their odd records refused: dead letters {k: 0, n: 1 and 3} of lane 0
    and {k: 1, n: 1 and 3} of lane 1, in the shared dead/; the lanes are empty."""
    path = tmp_path / "spool"
    _lanes_of(path, 4, 4, sink=_reject_odd)
    return path


def test_dead_list_names_the_lane_of_each_letter(
    runner: CliRunner, dead_in_two_lanes: Path
) -> None:
    """dead list shows every lane's dead letters, each with the lane that issued it."""
    data = json.loads(runner.invoke(cli, ["dead", str(dead_in_two_lanes), "list", "--json"]).output)
    assert sorted((d["lane"], d["item"]["k"], d["item"]["n"]) for d in data) == [
        (0, 0, 1), (0, 0, 3), (1, 1, 1), (1, 1, 3),
    ]  # fmt: skip
    text = runner.invoke(cli, ["dead", str(dead_in_two_lanes), "list"]).output
    assert "PermanentError: odd record [3]" in text


def test_dead_requeue_and_purge_while_a_process_holds_a_lane(
    runner: CliRunner, dead_in_two_lanes: Path
) -> None:
    """requeue puts lane 1's letters back into lane 1 and leaves those of lane 0, which a live
    process holds (exit 3, naming it); purge works meanwhile."""
    path = dead_in_two_lanes
    with lane_holder(path, "hold", 0) as holder:
        assert holder.lane == str(path)
        result = runner.invoke(cli, ["dead", str(path), "requeue"])
        assert result.exit_code == EXIT_BUSY
        assert "requeued 2 dead letter(s); 2 left" in result.output
        assert f"2 dead letter(s) left: their lanes are in use: lane 0 (pid {holder.pid})" in (
            result.output
        )
        back = [(r.lane, r.item) for r in insp.peek(path)]
        assert back == [(1, {"k": 1, "n": 1}), (1, {"k": 1, "n": 3})]
        left = insp.dead_letters(path)
        assert [(d.lane, d.item) for d in left] == [(0, {"k": 0, "n": 1}), (0, {"k": 0, "n": 3})]
        purged = runner.invoke(cli, ["dead", str(path), "purge", "--yes", "--id", left[0].id])
        assert purged.exit_code == EXIT_OK, purged.output
        assert "purged 1 dead letter(s); 1 left" in purged.output
        assert holder.proc.poll() is None


def test_drain_delivers_the_free_lanes_and_names_a_held_one(
    runner: CliRunner, tmp_path: Path
) -> None:
    """drain delivers every lane nobody holds, names the held lane with its pid and backlog
    (exit 3), and delivers that lane too once its process is gone."""
    path = tmp_path / "spool"
    target = tmp_path / "out.jsonl"
    url = f"jsonl://{target}"
    with lane_holder(path, "hold", 3) as holder:
        _lanes_of(path, 4, 5)
        result = runner.invoke(cli, ["drain", str(path), "--to", url])
        assert result.exit_code == EXIT_BUSY, result.output
        assert "delivered 9, dead-lettered 0" in result.output
        assert f"skipped lane 0: in use by pid {holder.pid}, 3 record(s) waiting" in result.output
        assert f"3 record(s) wait in lanes live processes hold: lane 0 (pid {holder.pid})" in (
            result.output
        )
        assert sorted((i["k"], i["n"]) for i in _jsonl_items(target)) == [
            *((0, n) for n in range(4)),
            *((1, n) for n in range(5)),
        ]
        holder.exit()
    again = runner.invoke(cli, ["drain", str(path), "--to", url])
    assert again.exit_code == EXIT_OK, again.output
    assert "delivered 3, dead-lettered 0" in again.output
    assert sorted(i["n"] for i in _jsonl_items(target) if "pid" in i) == [0, 1, 2]
    assert insp.inspect_spool(path).backlog == 0


def test_drain_exits_0_when_the_held_lanes_are_empty(runner: CliRunner, tmp_path: Path) -> None:
    """A held lane with nothing waiting leaves nothing undone: named, exit 0."""
    path = tmp_path / "spool"
    with lane_holder(path, "hold", 0) as holder:
        _lanes_of(path, 2)
        result = runner.invoke(cli, ["drain", str(path), "--to", f"jsonl://{tmp_path / 'o'}"])
        assert result.exit_code == EXIT_OK, result.output
        assert f"skipped lane 0: in use by pid {holder.pid}, 0 record(s) waiting" in result.output


# -- ship: one long-running process delivering every lane --------------------------------------


class Shipper:
    """``python -m spoolkit ship ...`` in a real process; its stderr lines are collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spoolkit", "ship", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def said(self, start: str) -> bool:
        """Whether a line of its stderr starts with ``start``."""
        return any(line.startswith(start) for line in list(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig`` and wait for the exit: (exit code, stdout)."""
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self) -> tuple[int, str]:
        """Wait for the exit: (exit code, stdout)."""
        code = self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read()

    def kill(self) -> None:
        """kill -9 if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def shippers() -> Iterator[Callable[..., Shipper]]:
    """Starts ``spoolkit ship`` processes; any still running at the end is killed."""
    started: list[Shipper] = []

    def start(*args: str) -> Shipper:
        started.append(Shipper(*args))
        return started[-1]

    yield start
    for shipper in started:
        shipper.kill()


def test_ship_delivers_the_lanes_of_producer_only_processes_and_stops_on_sigterm(
    tmp_path: Path, shippers: Callable[..., Shipper]
) -> None:
    """ship (started before the spool exists) delivers the lanes live producer-only processes
    hand over and the lane of one that exited; on SIGTERM it exits 0 saying what it
    delivered: every record, once."""
    path = tmp_path / "spool"
    target = tmp_path / "out.jsonl"
    shipper = shippers(str(path), "--to", f"jsonl://{target}", "--serializer", "json")
    assert wait_for(lambda: shipper.said("shipping ")), shipper.lines
    expected: set[tuple[int, int]] = set()
    with lane_holder(path, "produce", 30) as first, lane_holder(path, "produce", 20) as second:
        first.put(25)  # while ship runs: written after a handover, to the producer's next lane
        second.exit()  # its lane is left with what ship did not take yet
        expected |= {(first.pid, n) for n in range(55)} | {(second.pid, n) for n in range(20)}

        def delivered() -> set[tuple[int, int]]:
            items = _jsonl_items(target) if target.exists() else []
            return {(i["pid"], i["n"]) for i in items}

        assert wait_for(lambda: delivered() == expected), len(delivered())
        assert first.proc.poll() is None  # delivered while its producer still runs
    code, out = shipper.stop(signal.SIGTERM)
    assert code == EXIT_OK, shipper.lines
    assert len(_jsonl_items(target)) == len(expected)
    assert f"delivered {len(expected)}, dead-lettered 0, retried 0, left 0 on disk" in out
    assert shipper.said("stopping: delivering for up to 10s")
    assert not any("Traceback" in line for line in shipper.lines)
    assert insp.inspect_spool(path).backlog == 0


def test_ship_on_an_empty_directory_waits_for_producers(
    tmp_path: Path, shippers: Callable[..., Shipper]
) -> None:
    """An empty directory (a fresh volume) is a spool to be: ship runs on it, SIGINT stops
    it cleanly, and the new spool is JSON, the logging default, for the producers to come."""
    (tmp_path / "volume").mkdir()
    shipper = shippers(str(tmp_path / "volume"), "--to", f"jsonl://{tmp_path / 'out.jsonl'}")
    assert wait_for(lambda: shipper.said("shipping ")), shipper.lines
    code, out = shipper.stop(signal.SIGINT)
    assert code == EXIT_OK, shipper.lines
    assert "delivered 0, dead-lettered 0, retried 0, left 0 on disk" in out
    assert insp.serializer_name(tmp_path / "volume") == "json"


def test_ship_stops_at_once_on_a_second_signal_leaving_the_rest_on_disk(
    tmp_path: Path, shippers: Callable[..., Shipper]
) -> None:
    """With the sink down, SIGTERM starts a drain of up to --stop-timeout; a second signal
    (SIGINT) ends it at once: exit 0, every record still on disk."""
    path = tmp_path / "spool"
    _lanes_of(path, 12, 8)
    url = "http://127.0.0.1:9/ingest"  # the discard port: connection refused
    shipper = shippers(str(path), "--to", url, "--stop-timeout", "600", "--json")
    assert wait_for(lambda: shipper.said("shipping ")), shipper.lines
    shipper.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: shipper.said("stopping: delivering for up to 600s")), shipper.lines
    code, out = shipper.stop(signal.SIGINT)  # well before 600 s, or wait() times out
    assert code == EXIT_OK, shipper.lines
    summary = json.loads(out)
    assert (summary["delivered"], summary["dead_lettered"], summary["left"]) == (0, 0, 20)
    info = insp.inspect_spool(path)
    assert info.backlog == 20
    assert info.dead_letters == 0
    assert not info.locked


def test_ship_in_process_stops_on_sigterm_and_restores_the_signal_handlers(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Run in this process, ship delivers a lane nobody holds, stops on SIGTERM with exit 0
    and --json, and gives SIGTERM and SIGINT back their handlers."""
    path = tmp_path / "spool"
    _lanes_of(path, 3, 2)
    target = tmp_path / "out.jsonl"
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    sent = threading.Event()

    def terminate_once_delivered() -> None:
        # only once ship handles SIGTERM (sent earlier, it would end this test process)
        if wait_for(lambda: signal.getsignal(signal.SIGTERM) != before[0]) and wait_for(
            lambda: target.exists() and len(_jsonl_items(target)) == 5
        ):
            os.kill(os.getpid(), signal.SIGTERM)
            sent.set()

    killer = threading.Thread(target=terminate_once_delivered)
    killer.start()
    url = f"jsonl://{target}"
    result = runner.invoke(cli, ["ship", str(path), "--to", url, "--json", "--workers", "1"])
    killer.join(DEADLINE)
    assert sent.is_set()
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary == {"delivered": 5, "dead_lettered": 0, "retried": 0, "left": 0}
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
