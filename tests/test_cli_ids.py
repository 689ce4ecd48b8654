"""Record ids on the command line: one form (``<uid>-<seq>``), printed whole, accepted back;
``dead`` in either argument order, and its filters."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from spoolkit import Queue, Record, Spool
from spoolkit.cli import EXIT_OK, EXIT_USAGE, cli
from spoolkit.cli.dead_filters import parse_since
from spoolkit.errors import PermanentError
from spoolkit.tools import inspect as insp

ID = re.compile(r"\b[0-9a-f]{16,}-\d+\b")


def _refuse_odd(batch: Sequence[Record]) -> None:
    if any(r.item["n"] % 2 for r in batch):
        raise PermanentError(f"odd record {[r.item['n'] for r in batch]} " + "x" * 60)


@pytest.fixture
def dead_spool(tmp_path: Path) -> Path:
    """A stopped spool whose sink refused the odd records of 0..11 (six dead letters, long
    errors and items so that a table has to squeeze its columns)."""
    path = tmp_path / "spool"
    spool = Spool(path, _refuse_odd, workers=1, batch_size=1, serializer="json")
    spool.start()
    spool.put_many([{"n": i, "pad": "y" * 80} for i in range(12)])
    assert spool.flush(10)
    spool.stop()
    return path


@pytest.mark.parametrize("columns", ["80", "150"])
def test_dead_list_prints_every_id_whole_and_requeue_takes_it(
    dead_spool: Path, columns: str
) -> None:
    """At 80 and 150 columns every dead letter's full id appears on one line of dead list, and
    the id copied from there is what requeue --id takes."""
    runner = CliRunner(env={"COLUMNS": columns})
    result = runner.invoke(cli, ["dead", "list", str(dead_spool)])
    assert result.exit_code == EXIT_OK, result.output
    ids = [d.id for d in insp.dead_letters(dead_spool)]
    assert len(ids) == 6
    printed = ID.findall(result.output)
    assert printed == ids
    back = runner.invoke(cli, ["dead", "requeue", str(dead_spool), "--id", printed[2]])
    assert back.exit_code == EXIT_OK, back.output
    assert "requeued 1 dead letter(s); 5 left" in back.output
    assert [r.item["n"] for r in insp.peek(dead_spool)] == [5]


def test_peek_prints_the_ids_dead_letters_and_records_use(tmp_path: Path) -> None:
    """peek prints `<uid>-<seq>` ids, the Record.id a sink sees, whole at 80 columns."""
    path = tmp_path / "s"
    with Queue(path, serializer="json") as q:
        q.put_many([{"n": i} for i in range(3)])
    uid = insp.inspect_spool(path).uid
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["peek", str(path)])
    assert result.exit_code == EXIT_OK, result.output
    assert ID.findall(result.output) == [f"{uid}-{n}" for n in range(3)]
    seen: list[str] = []
    with Spool(path, lambda b: seen.extend(r.id for r in b), serializer="json") as spool:
        assert spool.flush(10)
    assert seen == [f"{uid}-{n}" for n in range(3)]


@pytest.mark.parametrize(
    "order", [["list", "{p}"], ["{p}", "list"]], ids=["action-first", "path-first"]
)
def test_dead_takes_the_action_before_or_after_the_path(dead_spool: Path, order: list[str]) -> None:
    """`dead list PATH` and `dead PATH list` both list the dead letters."""
    args = [a.format(p=dead_spool) for a in order]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["dead", *args, "--json"])
    assert result.exit_code == EXIT_OK, result.output
    assert len(json.loads(result.output)) == 6


@pytest.mark.parametrize("args", [["{p}", "show"], ["{p}"]], ids=["bad-action", "no-action"])
def test_a_wrong_dead_form_names_the_accepted_forms(dead_spool: Path, args: list[str]) -> None:
    """A dead command without a known action exits 2 and shows both accepted forms."""
    result = CliRunner().invoke(cli, ["dead", *(a.format(p=dead_spool) for a in args)])
    assert result.exit_code == EXIT_USAGE
    assert "spoolkit dead list|requeue|purge PATH" in result.output
    assert "spoolkit dead PATH list|requeue|purge" in result.output
    assert "Traceback" not in result.output


def _listed(dead_spool: Path, *options: str) -> list[int]:
    result = CliRunner().invoke(cli, ["dead", "list", str(dead_spool), "--json", *options])
    assert result.exit_code == EXIT_OK, result.output
    return [d["item"]["n"] for d in json.loads(result.output)]


def test_dead_list_limit_keeps_the_most_recent(dead_spool: Path) -> None:
    """--limit 2 lists the two most recent dead letters, oldest of them first."""
    assert _listed(dead_spool, "--limit", "2") == [9, 11]
    text = CliRunner().invoke(cli, ["dead", "list", str(dead_spool), "--limit", "2"]).output
    assert "2 of 6 dead letter(s) shown" in text


def test_dead_list_error_contains(dead_spool: Path) -> None:
    """--error-contains matches the error type and message, ignoring case."""
    assert _listed(dead_spool, "--error-contains", "ODD RECORD [7]") == [7]
    assert _listed(dead_spool, "--error-contains", "permanenterror") == [1, 3, 5, 7, 9, 11]
    assert _listed(dead_spool, "--error-contains", "timeout") == []


def test_dead_list_since_a_duration_or_a_time(dead_spool: Path) -> None:
    """--since 10m / an ISO time keep letters whose last attempt failed since then."""
    last = max(d.last_attempt_at for d in insp.dead_letters(dead_spool))
    assert _listed(dead_spool, "--since", "10m") == [1, 3, 5, 7, 9, 11]
    later = dt.datetime.fromtimestamp(last + 1, dt.UTC).isoformat()
    assert _listed(dead_spool, "--since", later) == []
    with freeze_time(dt.datetime.fromtimestamp(last + 7200, dt.UTC)):
        assert _listed(dead_spool, "--since", "1h") == []
        assert _listed(dead_spool, "--since", "1d") == [1, 3, 5, 7, 9, 11]


def test_since_parses_durations_and_iso_times() -> None:
    """parse_since reads 90s/10m/2h/1d/1w back from now, and ISO times (naive ones as UTC)."""
    now = 1_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("10m", now) == now - 600
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1d", now) == now - 86400
    assert parse_since("1w", now) == now - 604800
    assert parse_since("1970-01-01T00:00:10", now) == 10
    assert parse_since("1970-01-01T01:00:10+01:00", now) == 10
    assert parse_since("1970-01-01T00:00:10Z", now) == 10


def test_a_bad_since_is_a_usage_error_naming_the_forms(dead_spool: Path) -> None:
    """--since yesterday exits 2 and says which forms it takes."""
    result = CliRunner().invoke(cli, ["dead", "list", str(dead_spool), "--since", "yesterday"])
    assert result.exit_code == EXIT_USAGE
    assert "10m, 2h or 1d" in result.output


def test_dead_requeue_with_a_filter_moves_only_the_chosen(dead_spool: Path) -> None:
    """requeue --error-contains puts back only the matching letters."""
    result = CliRunner().invoke(
        cli, ["dead", "requeue", str(dead_spool), "--error-contains", "odd record [5]"]
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "requeued 1 dead letter(s); 5 left" in result.output
    assert [r.item["n"] for r in insp.peek(dead_spool)] == [5]
