"""Credentials in sink URLs, DSNs and headers never reach logs, stats, errors or CLI output.

Each test plants a unique secret and looks for it everywhere a user could see text: ``str``
and ``repr`` of sinks and errors, formatted tracebacks, log records, ``Spool.stats()``, dead
letters (in memory and on disk) and the CLI's stdout and stderr.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from spoolkit import Queue, Record, RetryPolicy, Spool
from spoolkit.backends.redis import RedisBackend
from spoolkit.cli import EXIT_PROBLEM, EXIT_USAGE, cli
from spoolkit.errors import SinkError
from spoolkit.sinks import from_url
from spoolkit.sinks.http import HttpSink
from spoolkit.testing import FakeClock
from tests.services._common import free_port

SECRET = "s3cr3t-Xq7Lm2"  # noqa: S105 - the planted credential the tests look for
RECORDS = [Record("r-1", {"n": 1}, 0.0)]


def _no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text)
        assert quote(SECRET, safe="") not in str(text)


def _failure_texts(call: Callable[[], object]) -> list[str]:
    """str, repr and the full formatted chain of the error ``call`` raises."""
    with pytest.raises(Exception) as info:
        call()
    exc = info.value
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def _dead_texts(path: Path) -> Iterator[str]:
    """Every dead letter's error text, and the raw bytes of the dead-letter files."""
    for p in (path / "dead").iterdir():
        if p.is_file():
            yield p.read_bytes().decode("latin-1")


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    return free_port()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at any level, spoolkit's included."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [caplog.text] + [repr(getattr(r, "spoolkit", "")) for r in caplog.records]


def _echoing_transport() -> httpx.MockTransport:
    """A transport that fails with a message quoting the URL and every header, as some do."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"cannot send to {request.url!s}: {dict(request.headers)}")

    return httpx.MockTransport(handler)


def _http_sink(port: int, transport: httpx.BaseTransport | None = None) -> HttpSink:
    return HttpSink(
        f"http://user:{SECRET}@127.0.0.1:{port}/in?token={SECRET}",
        headers={"X-Api-Key": SECRET, "Cookie": f"session={SECRET}"},
        auth=SECRET,
        transport=transport,
    )


def test_http_sink_repr_and_connection_errors_hide_credentials(closed_port: int) -> None:
    """An unreachable URL with user:password, token, API key and bearer: none shows."""
    sink = _http_sink(closed_port)
    _no_secret(repr(sink), str(sink), *_failure_texts(lambda: sink.write(RECORDS)))


def test_http_driver_messages_that_echo_secrets_are_masked_in_the_chain(closed_port: int) -> None:
    """A driver error quoting the URL and headers is masked in the mapped error and its chain."""
    sink = _http_sink(closed_port, _echoing_transport())
    texts = _failure_texts(lambda: sink.write(RECORDS))
    assert "LocalProtocolError" in texts[0]
    from spoolkit.deadletter import DeadError

    with pytest.raises(SinkError) as info:
        sink.write(RECORDS)
    dead = DeadError.from_exception(info.value)
    assert "LocalProtocolError" in dead.traceback
    _no_secret(texts[0], texts[1], dead.message, dead.traceback)


def test_spool_stats_logs_and_dead_letters_hide_credentials(
    tmp_path: Path, closed_port: int, logs: pytest.LogCaptureFixture
) -> None:
    """A spool whose HTTP sink fails: stats, logs and dead letters (memory, disk) are clean."""
    path = tmp_path / "spool"
    retry = RetryPolicy(max_attempts=2, initial_wait=0, jitter=0)
    sink = _http_sink(closed_port, _echoing_transport())
    with Spool(path, sink, serializer="json", retry=retry, clock=FakeClock()) as spool:
        spool.put({"n": 1})
        assert spool.flush(10)
        stats = spool.stats()
        letters = spool.dead_letters.list()
        assert len(letters) == 1
    assert stats.last_error is not None
    _no_secret(
        repr(stats),
        *(d.error.message + d.error.traceback for d in letters),
        *_dead_texts(path),
        *_log_texts(logs),
    )


def test_postgres_dsn_password_is_hidden(closed_port: int) -> None:
    """PostgresSink: repr and connection errors never show the DSN's password."""
    for dsn in (
        f"postgresql://app:{SECRET}@127.0.0.1:{closed_port}/db",
        f"host=127.0.0.1 port={closed_port} user=app password={SECRET} dbname=db",
    ):
        sink = _pg(dsn)
        _no_secret(repr(sink), *_failure_texts(lambda s=sink: s.write(RECORDS)))


def test_postgres_bad_dsn_error_hides_the_password() -> None:
    """A DSN libpq cannot parse is refused without quoting its password."""
    _no_secret(*_failure_texts(lambda: _pg(f"host=db password={SECRET} nonsense")))


def _pg(dsn: str) -> Any:
    from spoolkit.sinks.postgres import PostgresSink

    return PostgresSink(dsn, "events")


@pytest.mark.services
def test_postgres_real_server_errors_hide_the_password(postgres_dsn: str) -> None:
    """Against a real server (a missing database), the error and its chain are clean."""
    dsn = postgres_dsn.replace("postgres@", f"postgres:{SECRET}@").rsplit("/", 1)[0]
    sink = _pg(f"{dsn}/no_such_db_{free_port()}")
    _no_secret(repr(sink), *_failure_texts(lambda: sink.write(RECORDS)))


def test_redis_sink_and_backend_hide_the_password(closed_port: int) -> None:
    """redis:// URLs: sink and backend reprs and connection errors never show the password."""
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port}/0"
    sink = from_url(f"{url}?stream=s")
    _no_secret(repr(sink), *_failure_texts(lambda: sink.write(RECORDS)))
    backend = RedisBackend.from_url(f"{url}?stream=s&group=g")
    try:
        _no_secret(repr(backend), *_failure_texts(lambda: backend.get_batch(1, timeout=0)))
    finally:
        backend.close()
    _no_secret(*_failure_texts(lambda: RedisBackend.from_url(f"{url}?stream=s&maxlen=x")))


@pytest.mark.services
def test_redis_real_server_auth_error_hides_the_password(redis_url: str) -> None:
    """A user and password the server refuses are not echoed in the error."""
    url = redis_url.replace("redis://", f"redis://nobody:{SECRET}@")
    sink = from_url(f"{url}?stream=s")
    _no_secret(repr(sink), *_failure_texts(lambda: sink.write(RECORDS)))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """A closed json spool holding three records."""
    path = tmp_path / "spool"
    with Queue(path, serializer="json") as q:
        q.put_many([{"n": i} for i in range(3)])
    return path


@pytest.mark.parametrize(
    "url",
    [
        "http://user:{s}@127.0.0.1:{port}/in?token={s}",
        "postgresql://app:{s}@127.0.0.1:{port}/db?table=t",
        "redis://:{s}@127.0.0.1:{port}/0?stream=s",
    ],
    ids=["http", "postgres", "redis"],
)
def test_cli_drain_to_an_unreachable_url_hides_the_password(
    spool_dir: Path, closed_port: int, url: str
) -> None:
    """`spoolkit drain --to URL` that cannot connect prints no credential, then inspect/dead."""
    runner = CliRunner(env={"COLUMNS": "200"})
    target = url.format(s=SECRET, port=closed_port)
    result = runner.invoke(cli, ["drain", str(spool_dir), "--to", target, "--timeout", "0.5"])
    assert result.exit_code == EXIT_PROBLEM
    outputs = [result.stdout, result.stderr]
    path = str(spool_dir)
    for args in (["inspect", path], ["inspect", path, "--json"], ["dead", path, "list"]):
        shown = runner.invoke(cli, args)
        assert shown.exit_code == 0, shown.output
        outputs += [shown.stdout, shown.stderr]
    _no_secret(*outputs)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:{s}@[::1/in",
        "postgresql://app:{s}@h/db?table=t&create=maybe",
        "redis://:{s}@127.0.0.1:notaport/0?stream=s",
        "https://user:{s}@h/x?format=xml",
    ],
    ids=["bad-host", "bad-option", "bad-port", "bad-format"],
)
def test_cli_drain_to_a_malformed_url_hides_the_password(spool_dir: Path, url: str) -> None:
    """A sink URL the CLI refuses (exit 2) is quoted without its password."""
    result = CliRunner().invoke(cli, ["drain", str(spool_dir), "--to", url.format(s=SECRET)])
    assert result.exit_code == EXIT_USAGE, result.output
    _no_secret(result.stdout, result.stderr)


def test_custom_sink_error_quoting_a_url_is_masked_everywhere(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A custom sink's error quoting a URL with a password: masked in logs, stats, dead letters."""

    def leaky(batch: Any) -> None:
        raise ValueError(f"could not post to https://bot:{SECRET}@hooks.example.com/x")

    path = tmp_path / "spool"
    retry = RetryPolicy(max_attempts=2, initial_wait=0, jitter=0)
    with Spool(path, leaky, serializer="json", retry=retry, clock=FakeClock()) as spool:
        spool.put({"n": 1})
        assert spool.flush(10)
        stats = spool.stats()
    result = CliRunner().invoke(cli, ["dead", str(path), "list", "--json"])
    assert "hooks.example.com" in result.stdout
    assert "batch_retry" in logs.text
    assert "batch_dead_lettered" in logs.text
    _no_secret(result.stdout, *_dead_texts(path), stats.last_error, *_log_texts(logs))
