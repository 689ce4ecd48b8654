"""`spoolkit drain` never empties a spool into dead letters because the sink is wrong."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from spoolkit import Queue
from spoolkit.cli import EXIT_OK, EXIT_PROBLEM, cli
from spoolkit.cli.drain_guard import SAME_FAILURES
from spoolkit.tools import inspect as insp

RECORDS = 300


@pytest.fixture
def runner() -> CliRunner:
    """A click test runner with a wide terminal."""
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def backlog(tmp_path: Path) -> Path:
    """A closed JSON spool with RECORDS records waiting."""
    path = tmp_path / "spool"
    with Queue(path, serializer="json") as q:
        q.put_many([{"n": i} for i in range(RECORDS)])
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 nothing listens on (bound, never listening, so never reused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _intact(path: Path) -> None:
    assert insp.inspect_spool(path).backlog == RECORDS
    assert insp.dead_letters(path) == []
    with Queue(path, serializer="json") as q:
        assert q.qsize() == RECORDS


def test_a_closed_port_stops_before_taking_anything(
    runner: CliRunner, backlog: Path, closed_port: int
) -> None:
    """A sink whose host refuses connections: exit 1 at once, why and what to do, spool intact."""
    url = f"http://127.0.0.1:{closed_port}/typo"
    result = runner.invoke(cli, ["drain", str(backlog), "--to", url, "--timeout", "20"])
    assert result.exit_code == EXIT_PROBLEM, result.output
    assert f"cannot connect to 127.0.0.1:{closed_port}" in result.output
    assert "check --to" in result.output
    assert "nothing was taken" in result.output
    _intact(backlog)


@pytest.mark.parametrize("extra", [[], ["--max-attempts", "1"]], ids=["default", "max-attempts"])
def test_a_404_stops_the_drain_with_every_record_queued(
    runner: CliRunner, backlog: Path, httpserver: HTTPServer, extra: list[str]
) -> None:
    """A server answering 404 to every batch: exit 1, the 404 named, nothing dead-lettered."""
    httpserver.expect_request("/typo").respond_with_data("no such path", status=404)
    url = httpserver.url_for("/typo")
    result = runner.invoke(cli, ["drain", str(backlog), "--to", url, "--timeout", "20", *extra])
    assert result.exit_code == EXIT_PROBLEM, result.output
    assert "404" in result.output
    assert f"{RECORDS} record(s) are still queued" in result.output
    assert "run drain again" in result.output
    assert "delivered 0, dead-lettered 0" in result.output
    assert f" 0/{RECORDS} " in result.output  # the progress bar counts delivered records only
    _intact(backlog)


def test_a_500_on_every_batch_stops_the_drain_with_every_record_queued(
    runner: CliRunner, backlog: Path, httpserver: HTTPServer
) -> None:
    """A server answering 500 to every batch: the drain stops after the same failure repeats."""
    httpserver.expect_request("/ingest").respond_with_data("boom", status=500)
    url = httpserver.url_for("/ingest")
    result = runner.invoke(cli, ["drain", str(backlog), "--to", url, "--timeout", "60", "--json"])
    assert result.exit_code == EXIT_PROBLEM, result.output
    data = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert (data["delivered"], data["dead_lettered"], data["left"]) == (0, 0, RECORDS)
    assert "failed the same way" in data["stopped"]
    assert "500" in data["stopped"]
    _intact(backlog)


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead-letter", "no-dead-letter"])
def test_a_server_that_breaks_midway_keeps_the_rest_queued(
    runner: CliRunner, backlog: Path, httpserver: HTTPServer, dead_letter: bool
) -> None:
    """The first batches go through, then every batch is refused with 400: the drain stops
    with the rest queued, after dead-lettering at most SAME_FAILURES - 1 batches (none with
    --no-dead-letter)."""
    answered: list[int] = []

    def handler(_request: Request) -> Response:
        answered.append(1)
        ok = len(answered) <= 2
        return Response("ok" if ok else "bad", status=200 if ok else 400)

    httpserver.expect_request("/ingest").respond_with_handler(handler)
    url = httpserver.url_for("/ingest")
    args = ["drain", str(backlog), "--to", url, "--batch-size", "10", "--workers", "1"]
    flags = [] if dead_letter else ["--no-dead-letter"]
    result = runner.invoke(cli, [*args, *flags, "--timeout", "20"])
    assert result.exit_code == EXIT_PROBLEM, result.output
    dead = len(insp.dead_letters(backlog))
    assert f" 20/{RECORDS} " in result.output  # the progress bar counts delivered records only
    if dead_letter:
        assert "failed the same way" in result.output
        assert dead == (SAME_FAILURES - 1) * 10
    else:
        assert "--no-dead-letter keeps it" in result.output
        assert dead == 0
    assert insp.inspect_spool(backlog).backlog == RECORDS - 20 - dead


def test_a_healthy_server_gets_everything(
    runner: CliRunner, backlog: Path, httpserver: HTTPServer
) -> None:
    """A server answering 200: every record delivered, the spool empty, exit 0."""
    received: list[int] = []

    def handler(request: Request) -> Response:
        received.extend(r["item"]["n"] for r in json.loads(request.data))
        return Response("ok", status=200)

    httpserver.expect_request("/ingest").respond_with_handler(handler)
    url = httpserver.url_for("/ingest")
    result = runner.invoke(cli, ["drain", str(backlog), "--to", url, "--json"])
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert (data["delivered"], data["dead_lettered"], data["left"]) == (RECORDS, 0, 0)
    assert data["stopped"] is None
    assert sorted(received) == list(range(RECORDS))
    assert insp.inspect_spool(backlog).backlog == 0


@pytest.mark.parametrize("max_attempts", [None, 1])
def test_once_the_sink_works_the_retry_policy_decides(
    runner: CliRunner, backlog: Path, httpserver: HTTPServer, max_attempts: int | None
) -> None:
    """One 500 after the sink proved itself: retried and delivered by default; with
    --max-attempts 1 that batch is dead-lettered (exit 1, `dead list` named) and the rest
    delivered."""
    answered: list[int] = []

    def handler(_request: Request) -> Response:
        answered.append(1)
        return Response(
            "boom" if len(answered) == 3 else "ok", status=500 if len(answered) == 3 else 200
        )

    httpserver.expect_request("/ingest").respond_with_handler(handler)
    url = httpserver.url_for("/ingest")
    args = ["drain", str(backlog), "--to", url, "--batch-size", "10", "--workers", "1"]
    extra = [] if max_attempts is None else ["--max-attempts", str(max_attempts)]
    result = runner.invoke(cli, [*args, *extra, "--timeout", "30"])
    dead = len(insp.dead_letters(backlog))
    if max_attempts is None:
        assert result.exit_code == EXIT_OK, result.output
        assert dead == 0
    else:
        assert result.exit_code == EXIT_PROBLEM, result.output
        assert "10 record(s) were dead-lettered: see `spoolkit dead list" in result.output
        assert dead == 10
    assert insp.inspect_spool(backlog).backlog == 0
