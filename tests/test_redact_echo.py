"""A server that echoes the request's credentials back in a 401: nothing a user sees shows them.

A real HTTP server on 127.0.0.1 answers every POST with ``401`` and a body quoting the
``Authorization`` header (as sent and decoded), the request path with its query string and
the ``X-Api-Key`` header, as some servers do. Each test plants a password and a token, in
every way the HTTP sink can be given them (URL userinfo, ``auth=(user, password)``, an
``Authorization: Basic`` header, a ``?token=`` query parameter), then looks for the plain
secret and its base64 basic-auth form in the exception, ``Spool.stats().last_error``, the dead
letter's error and traceback (read through the ``DeadLetters`` API), ``spoolkit inspect``
(table and JSON) and httpx's own log lines.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spoolkit import Record, RetryPolicy, Spool
from spoolkit.cli import cli
from spoolkit.errors import PermanentError
from spoolkit.sinks import HttpSink
from spoolkit.testing import FakeClock

USER = "svc"
SECRET = "S3cr3t-Pw9"  # noqa: S105 - the planted password the tests look for
TOKEN = "T0k3n-Qz8"  # noqa: S105 - the planted query token
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
RECORDS = [Record("r-1", {"n": 1}, 0.0)]


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every POST with 401 quoting the request's credentials: the Authorization header
    as sent and decoded, the path with its query string, the X-Api-Key header."""

    seen: list[str]  # the Authorization headers received, set per server
    pad = 0  # characters of filler before the echo (to push it across the excerpt's end)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization", "")
        self.server.seen.append(auth)  # type: ignore[attr-defined]
        pad = "x" * self.server.pad  # type: ignore[attr-defined]
        decoded = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth else ""
        body = (
            f"{pad}unauthorized: got Authorization={auth} path={self.path} "
            f"key={self.headers.get('X-Api-Key', '')} (user:password {decoded})"
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class EchoServer:
    """A running echo server: its base URL and the Authorization headers it received."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.seen: list[str] = server.seen  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def pad(self, n: int) -> None:
        """Put ``n`` characters of filler before the echo from now on."""
        self._server.pad = n  # type: ignore[attr-defined]


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """An echoing 401 server on a free port of 127.0.0.1, stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.seen = []  # type: ignore[attr-defined]
    server.pad = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield EchoServer(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _forms() -> list[str]:
    """Every spelling of the planted credentials a leak could take."""
    return [SECRET, TOKEN, BASIC, BASIC.rstrip("="), f"{USER}:{SECRET}"]


def _assert_clean(where: str, text: object) -> None:
    for form in _forms():
        assert form not in str(text), f"{form!r} leaked into {where}: {text!s}"


def _sinks(base: str) -> dict[str, HttpSink]:
    """One sink per way of giving the HTTP sink a password, each with a ?token= as well."""
    hostport = base.removeprefix("http://")
    return {
        "url-userinfo": HttpSink(f"http://{USER}:{SECRET}@{hostport}/in?token={TOKEN}"),
        "auth-tuple": HttpSink(f"{base}/in?token={TOKEN}", auth=(USER, SECRET)),
        "basic-header": HttpSink(
            f"{base}/in?token={TOKEN}", headers={"Authorization": f"Basic {BASIC}"}
        ),
    }


@pytest.mark.parametrize("how", ["url-userinfo", "auth-tuple", "basic-header"])
def test_echoed_credentials_are_masked_in_the_exception(echo: EchoServer, how: str) -> None:
    """The 401's echo of the Basic header and token is masked in str, repr and traceback."""
    sink = _sinks(echo.url)[how]
    try:
        with pytest.raises(PermanentError) as info:
            sink.write(RECORDS)
    finally:
        sink.close()
    assert echo.seen == [f"Basic {BASIC}"]  # the server did see, and echo, the credential
    exc = info.value
    assert "HTTP 401" in str(exc)
    assert re.search(r"Authorization=(Basic )?\*\*\* ", str(exc))
    _assert_clean("str(exc)", exc)
    _assert_clean("repr(exc)", repr(exc))
    _assert_clean("the traceback", "".join(traceback.format_exception(exc)))


def test_a_secret_cut_by_the_body_excerpt_is_not_shown_in_part(echo: EchoServer) -> None:
    """An echo that straddles the 200-character excerpt shows no prefix of the credential."""
    sink = _sinks(echo.url)["url-userinfo"]
    echo.pad(200 - len("unauthorized: got Authorization=Basic ") - len(BASIC) // 2)
    try:
        with pytest.raises(PermanentError) as info:
            sink.write(RECORDS)
    finally:
        sink.close()
    assert BASIC[: len(BASIC) // 2] not in str(info.value)


@pytest.fixture
def httpx_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """httpx's own log records at INFO (its "HTTP Request: POST <url>" line)."""
    with caplog.at_level(logging.INFO, logger="httpx"):
        yield caplog


@pytest.mark.parametrize("how", ["url-userinfo", "auth-tuple", "basic-header"])
def test_spool_stats_dead_letters_inspect_and_httpx_log_hide_the_credentials(
    tmp_path: Path, echo: EchoServer, httpx_info: pytest.LogCaptureFixture, how: str
) -> None:
    """A spool whose sink is refused with an echo: stats, dead letters, inspect, logs clean."""
    path = tmp_path / "spool"
    retry = RetryPolicy(max_attempts=1, initial_wait=0, jitter=0)
    sink = _sinks(echo.url)[how]
    with Spool(path, sink, serializer="json", retry=retry, clock=FakeClock()) as spool:
        spool.put({"n": 1})
        assert spool.flush(10)
        stats = spool.stats()
        letters = spool.dead_letters.list()
    assert echo.seen, "the server received no request"
    assert stats.last_error is not None
    assert "HTTP 401" in stats.last_error
    _assert_clean("stats().last_error", stats.last_error)
    assert len(letters) == 1
    error = letters[0].error
    assert re.search(r"Authorization=(Basic )?\*\*\* ", error.message)
    _assert_clean("the dead letter's error", error.message)
    _assert_clean("the dead letter's traceback", error.traceback)

    runner = CliRunner(env={"COLUMNS": "400"})
    for args in (["inspect", str(path)], ["inspect", str(path), "--json"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "HTTP 401" in result.stdout
        _assert_clean(f"spoolkit {' '.join(args)}", result.stdout + result.stderr)

    lines = [r.getMessage() for r in httpx_info.records if r.name == "httpx"]
    assert any("HTTP Request: POST" in line for line in lines), lines
    for line in lines:
        _assert_clean("httpx's log", line)


def test_httpx_log_line_has_no_userinfo_and_a_masked_token(
    echo: EchoServer, httpx_info: pytest.LogCaptureFixture
) -> None:
    """httpx logs the URL without user:password (sent as auth=) and with ?token=*** masked."""
    sink = _sinks(echo.url)["url-userinfo"]
    try:
        with pytest.raises(PermanentError):
            sink.write(RECORDS)
    finally:
        sink.close()
    (line,) = [r.getMessage() for r in httpx_info.records if r.name == "httpx"]
    assert f"POST {echo.url}/in?token=***" in line
    assert "@" not in line
