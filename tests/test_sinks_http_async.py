"""AsyncHttpSink against real local HTTP servers on 127.0.0.1: alone, and in a Spool with
concurrency 8 (delivery, retries on 5xx and timeouts, 4xx dead-lettered, 8 batches in flight)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from spoolkit import RetryPolicy
from spoolkit.errors import ConfigError, PermanentError, SinkError, TransientError
from spoolkit.sinks import AsyncHttpSink, HttpSink, from_url
from spoolkit.testing import FakeClock
from spoolkit.typing import Record
from tests.helpers import spool_factory
from tests.services._common import free_port
from tests.test_sinks_http import _EXPECTED, _make

make_spool = pytest.fixture(name="make_spool")(spool_factory)


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """Serve on IPv4 loopback, on a free port."""
    return ("127.0.0.1", 0)


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"r{i}", {"n": i, "msg": f"hello {i}"}, 1700000000.5 + i)
        for i in range(start, start + n)
    ]


def send(sink: AsyncHttpSink, *batches: Sequence[Record]) -> list[BaseException | None]:
    """Write each batch in turn on one event loop, then close the sink; each outcome."""

    async def main() -> list[BaseException | None]:
        out: list[BaseException | None] = []
        try:
            for batch in batches:
                try:
                    await sink.write(batch)
                    out.append(None)
                except SinkError as exc:
                    out.append(exc)
        finally:
            await sink.aclose()
        return out

    return asyncio.run(main())


# -- the sink alone --------------------------------------------------------------------------


def test_batch_is_posted_as_the_sync_sinks_json_array(httpserver: HTTPServer) -> None:
    """The body and headers are HttpSink's: a JSON array of {id, enqueued_at, item}."""
    httpserver.expect_request(
        "/in", method="POST", headers={"Content-Type": "application/json"}
    ).respond_with_data("ok")
    assert send(AsyncHttpSink(httpserver.url_for("/in")), records(2)) == [None]
    HttpSink(httpserver.url_for("/in")).write(records(2))
    httpserver.check_assertions()
    (async_request, _), (sync_request, _) = httpserver.log
    assert json.loads(async_request.get_data())[1] == {
        "id": "r1",
        "enqueued_at": 1700000001.5,
        "item": {"n": 1, "msg": "hello 1"},
    }
    assert async_request.get_data() == sync_request.get_data()


def test_ndjson_and_gzip_are_supported(httpserver: HTTPServer) -> None:
    """format="ndjson" with gzip=True sends compressed NDJSON with both headers."""
    httpserver.expect_request(
        "/nd", headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    ).respond_with_data("")
    assert send(AsyncHttpSink(httpserver.url_for("/nd"), format="ndjson", gzip=True), records(3))
    httpserver.check_assertions()


def test_500_is_transient_and_the_retry_is_accepted(httpserver: HTTPServer) -> None:
    """A 500 raises TransientError; the same batch sent again is accepted by the next 200."""
    httpserver.expect_ordered_request("/f").respond_with_data("boom", status=500)
    httpserver.expect_ordered_request("/f").respond_with_data("ok")
    batch = records(2)
    first, second = send(AsyncHttpSink(httpserver.url_for("/f")), batch, batch)
    assert isinstance(first, TransientError)
    assert "HTTP 500" in str(first)
    assert second is None


def test_429_retry_after_is_kept(httpserver: HTTPServer) -> None:
    """A 429 with Retry-After: 7 is a TransientError whose retry_after is 7."""
    httpserver.expect_request("/r").respond_with_data(
        "slow", status=429, headers={"Retry-After": "7"}
    )
    [error] = send(AsyncHttpSink(httpserver.url_for("/r")), records(1))
    assert isinstance(error, TransientError)
    assert error.retry_after == 7


def test_400_is_permanent_with_status_and_body(httpserver: HTTPServer) -> None:
    """A 400 raises PermanentError naming the status and quoting the body."""
    httpserver.expect_request("/b").respond_with_data('{"error":"bad level"}', status=400)
    [error] = send(AsyncHttpSink(httpserver.url_for("/b")), records(1))
    assert isinstance(error, PermanentError)
    assert "HTTP 400 BAD REQUEST" in str(error).upper()
    assert "bad level" in str(error)


def test_credentials_are_sent_and_never_shown(httpserver: HTTPServer) -> None:
    """URL userinfo goes as basic auth; neither it nor a header token shows in repr or errors,
    even when the server echoes them back."""
    token = "tok-SECRET-123"  # noqa: S105 - a fake secret the test looks for
    basic = base64.b64encode(b"user:pw-SECRET").decode()

    def echo(request: Any) -> Any:
        from werkzeug import Response

        return Response(f"denied {request.headers}", status=403)

    httpserver.expect_request(
        "/a", headers={"Authorization": f"Basic {basic}"}
    ).respond_with_handler(echo)
    url = httpserver.url_for("/a").replace("http://", "http://user:pw-SECRET@")
    sink = AsyncHttpSink(url, headers={"X-Api-Key": token})
    [error] = send(sink, records(1))
    httpserver.check_assertions()
    shown = f"{sink!r} {error} {error!r}"
    assert isinstance(error, PermanentError)
    for secret in ("pw-SECRET", token, basic):
        assert secret not in shown


def test_connection_refused_is_transient() -> None:
    """Nothing listening: TransientError chained to httpx.ConnectError."""
    [error] = send(AsyncHttpSink(f"http://127.0.0.1:{free_port()}/x"), records(1))
    assert isinstance(error, TransientError)
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_read_timeout_is_transient() -> None:
    """A server that accepts but never answers trips the timeout: TransientError."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        [error] = send(AsyncHttpSink(url, timeout=0.2), records(1))
    assert isinstance(error, TransientError)
    assert isinstance(error.__cause__, httpx.ReadTimeout)


@pytest.mark.parametrize("cls", list(_EXPECTED), ids=lambda c: c.__name__)
def test_every_httpx_error_is_mapped_as_for_the_sync_sink(cls: type[Exception]) -> None:
    """Each httpx error raised while sending maps to HttpSink's family, chained, redacted."""
    exc = _make(cls)

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    sink = AsyncHttpSink("http://u:pw-SECRET@h/x", transport=httpx.MockTransport(handler))
    [error] = send(sink, records(1))
    assert type(error) is _EXPECTED[cls]
    assert error is not None
    assert error.__cause__ is exc
    assert "pw-SECRET" not in str(error)


def test_empty_batch_sends_nothing(httpserver: HTTPServer) -> None:
    """An empty batch makes no request."""
    assert send(AsyncHttpSink(httpserver.url_for("/e")), []) == [None]
    assert httpserver.log == []


@pytest.mark.skipif(importlib.util.find_spec("h2") is not None, reason="h2 is installed")
def test_http2_without_h2_names_the_extra() -> None:
    """http2=True without the h2 package is an ImportError naming httpx[http2]."""
    with pytest.raises(ImportError, match=r"httpx\[http2\]"):
        AsyncHttpSink("https://h/x", http2=True)


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("ftp://h/x", {}),
        ("https://h/x", {"format": "xml"}),
        ("https://h/x", {"timeout": 0}),
        ("https://h/x", {"concurrency": 0}),
        ("https://h/x", {"concurrency": True}),
    ],
)
def test_bad_configuration_is_config_error(url: str, kwargs: dict[str, Any]) -> None:
    """A bad URL, format, timeout or concurrency is a ConfigError."""
    with pytest.raises(ConfigError):
        AsyncHttpSink(url, **kwargs)


def test_close_from_another_thread_closes_the_client_on_its_loop(httpserver: HTTPServer) -> None:
    """close() from a thread other than the client's running loop closes the client there."""
    httpserver.expect_request("/c").respond_with_data("")
    sink = AsyncHttpSink(httpserver.url_for("/c"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(sink.write(records(1)), loop).result(10)
        client = sink._client
        assert client is not None
        assert not client.is_closed
        sink.close()
        assert client.is_closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- from_url --------------------------------------------------------------------------------


def test_from_url_async_true_picks_the_async_sink() -> None:
    """?async=true gives an AsyncHttpSink with its options; other parameters stay in the URL."""
    sink = from_url("https://h/in?async=true&concurrency=8&format=ndjson&timeout=2&ds=web")
    assert isinstance(sink, AsyncHttpSink)
    assert (sink.url, sink.concurrency, sink.format, sink.timeout) == (
        "https://h/in?ds=web",
        8,
        "ndjson",
        2.0,
    )
    assert isinstance(from_url("https://h/in?async=false"), HttpSink)


@pytest.mark.parametrize("url", ["https://h/x?http2=true", "https://h/x?concurrency=4"])
def test_from_url_async_only_options_need_async_true(url: str) -> None:
    """http2= or concurrency= without async=true is a ConfigError that says to add it."""
    with pytest.raises(ConfigError, match="async=true"):
        from_url(url)


# -- in a Spool, against a real threaded server, concurrency 8 --------------------------------


class Ingest(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that records each batch and answers per ``decide``.

    ``decide(body_ids, n)`` gets the ids of the n-th request (1-based) and returns a status.
    """

    daemon_threads = True

    def __init__(self, decide: Callable[[list[str], int], int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.decide = decide
        self.lock = threading.Lock()
        self.requests = 0
        self.accepted: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.release = threading.Event()  # set at the end: no handler stays blocked

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"


class _Handler(BaseHTTPRequestHandler):
    server: Ingest

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        """Decide, record and answer."""
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ids = [r["id"] for r in json.loads(body)]
        with srv.lock:
            srv.requests += 1
            n = srv.requests
            srv.in_flight += 1
            srv.peak = max(srv.peak, srv.in_flight)
        try:
            status = srv.decide(ids, n)
        finally:
            with srv.lock:
                srv.in_flight -= 1
        if status == 200:
            with srv.lock:
                srv.accepted.extend(ids)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[list[str], int], int]], Ingest]]:
    """Start Ingest servers; each is released and shut down after the test."""
    servers: list[Ingest] = []

    def start(decide: Callable[[list[str], int], int]) -> Ingest:
        server = Ingest(decide)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def spool_options(**extra: Any) -> dict[str, Any]:
    """Eight workers, eight in flight, retries at once on a fake clock."""
    return {
        "workers": 8,
        "batch_size": 5,
        "retry": RetryPolicy(max_attempts=20, jitter=0),
        "clock": FakeClock(),
        **extra,
    }


def test_spool_delivers_every_record_through_8_concurrent_calls(
    make_spool: Any, serve: Any
) -> None:
    """400 records through AsyncHttpSink(concurrency=8) all reach the server and are counted."""
    server = serve(lambda ids, n: 200)
    sink = AsyncHttpSink(server.url, concurrency=8)
    with make_spool(sink, **spool_options()) as spool:
        spool.put_many(range(400))
        assert spool.flush(20)
        stats = spool.stats()
    assert len(set(server.accepted)) == 400
    assert (stats.delivered, stats.dead_lettered) == (400, 0)


def test_eight_batches_are_really_in_flight_at_once(make_spool: Any, serve: Any) -> None:
    """A server that holds every request until 8 have arrived gets them: 8 calls at once."""
    barrier = threading.Barrier(8)

    def hold_until_8(ids: list[str], n: int) -> int:
        if n <= 8:
            barrier.wait(timeout=10)  # breaks (500) unless 8 requests are held at once
        return 200

    server = serve(hold_until_8)
    sink = AsyncHttpSink(server.url, concurrency=8)
    with make_spool(
        sink, **spool_options(batch_size=1, retry=RetryPolicy(max_attempts=1))
    ) as spool:
        spool.put_many(range(8))
        assert spool.flush(20)
        stats = spool.stats()
    assert not barrier.broken
    assert server.peak == 8
    assert (stats.delivered, stats.dead_lettered) == (8, 0)


def test_server_down_for_a_while_then_every_record_delivered(make_spool: Any, serve: Any) -> None:
    """503 for the first 12 requests: those batches are retried and every record arrives."""
    server = serve(lambda ids, n: 503 if n <= 12 else 200)
    sink = AsyncHttpSink(server.url, concurrency=8)
    with make_spool(sink, **spool_options()) as spool:
        spool.put_many(range(100))
        assert spool.flush(20)
        stats = spool.stats()
    assert len(set(server.accepted)) == 100
    assert stats.delivered == 100
    assert stats.retried >= 12  # 12 failed requests of up to 5 records each were retried
    assert "HTTP 503" in (stats.last_error or "")


def test_a_timed_out_request_is_retried(make_spool: Any, serve: Any) -> None:
    """The first request hangs past the sink's timeout: TransientError, then the retry lands."""

    def hang_first(ids: list[str], n: int) -> int:
        if n == 1:
            server.release.wait(30)
        return 200

    server = serve(hang_first)
    sink = AsyncHttpSink(server.url, concurrency=8, timeout=0.3)
    with make_spool(sink, **spool_options(workers=1, batch_size=10)) as spool:
        spool.put_many(range(3))
        assert spool.flush(20)
        stats = spool.stats()
    assert sorted(server.accepted) == sorted(set(server.accepted))
    assert len(server.accepted) == 3
    assert (stats.delivered, stats.retried) == (3, 3)
    assert "ReadTimeout" in (stats.last_error or "")


def test_4xx_batches_are_dead_lettered_the_rest_delivered(make_spool: Any, serve: Any) -> None:
    """A 400 for some batches dead-letters them at once; the other batches are delivered."""
    server = serve(
        lambda ids, n: 400 if any(int(i.rsplit("-", 1)[1]) % 10 == 3 for i in ids) else 200
    )
    sink = AsyncHttpSink(server.url, concurrency=8)
    with make_spool(sink, **spool_options(batch_size=1)) as spool:
        spool.put_many(range(40))
        assert spool.flush(20)
        stats = spool.stats()
        letters = spool.dead_letters.list()
    assert sorted(d.record.item for d in letters) == [3, 13, 23, 33]
    assert all("HTTP 400" in str(d.error) for d in letters)
    assert (stats.delivered, stats.dead_lettered, stats.retried) == (36, 4, 0)
