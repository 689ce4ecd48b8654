"""HttpSink against a real local HTTP server (pytest-httpserver on 127.0.0.1)."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from freezegun import freeze_time
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from spoolkit.errors import PartialFailure, PermanentError, SinkError, TransientError
from spoolkit.sinks import HttpSink
from spoolkit.sinks.http import map_http_failure
from spoolkit.typing import Record
from tests.helpers import closing_factory, errors_in_threads
from tests.services._common import free_port


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """Serve on IPv4 loopback, on a free port."""
    return ("127.0.0.1", 0)


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"r{i}", {"n": i, "msg": f"hello {i}"}, 1700000000.5 + i)
        for i in range(start, start + n)
    ]


MakeSink = Callable[..., HttpSink]


@pytest.fixture
def sink_factory() -> Iterator[MakeSink]:
    """Build HttpSinks that are closed after the test."""
    with closing_factory(HttpSink) as make:
        yield make


def test_batch_is_posted_as_json_array_of_default_shape(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """A batch is one POST whose body is a JSON array of {id, enqueued_at, item}."""
    httpserver.expect_request(
        "/ingest", method="POST", headers={"Content-Type": "application/json"}
    ).respond_with_data("ok")
    sink = sink_factory(httpserver.url_for("/ingest"))
    sink.write(records(2))
    httpserver.check_assertions()
    ((request, _),) = httpserver.log
    assert json.loads(request.get_data()) == [
        {"id": "r0", "enqueued_at": 1700000000.5, "item": {"n": 0, "msg": "hello 0"}},
        {"id": "r1", "enqueued_at": 1700000001.5, "item": {"n": 1, "msg": "hello 1"}},
    ]


def test_ndjson_body_is_one_json_value_per_line(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """format="ndjson" sends newline-terminated lines with the NDJSON content type."""
    httpserver.expect_request(
        "/nd", headers={"Content-Type": "application/x-ndjson"}
    ).respond_with_data("")
    sink = sink_factory(httpserver.url_for("/nd"), format="ndjson")
    sink.write(records(3))
    httpserver.check_assertions()
    body = httpserver.log[0][0].get_data(as_text=True)
    assert body.endswith("\n")
    lines = body.split("\n")[:-1]
    assert [json.loads(line)["id"] for line in lines] == ["r0", "r1", "r2"]


def test_gzip_body_decodes_to_the_batch(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """gzip=True compresses the body and says so in Content-Encoding."""
    httpserver.expect_request("/gz", headers={"Content-Encoding": "gzip"}).respond_with_data("")
    sink = sink_factory(httpserver.url_for("/gz"), gzip=True)
    sink.write(records(50))
    httpserver.check_assertions()
    raw = httpserver.log[0][0].get_data()
    assert raw[:2] == b"\x1f\x8b"
    assert [r["id"] for r in json.loads(gzip.decompress(raw))] == [f"r{i}" for i in range(50)]


def test_to_json_replaces_the_default_shape(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """to_json decides what each element of the body is."""
    httpserver.expect_request("/m").respond_with_data("")
    sink = sink_factory(httpserver.url_for("/m"), to_json=lambda r: {"key": r.id, **r.item})
    sink.write(records(1))
    assert json.loads(httpserver.log[0][0].get_data()) == [{"key": "r0", "n": 0, "msg": "hello 0"}]


def test_flaky_server_500_then_200(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """A 500 raises TransientError; the retried batch is accepted by the next 200."""
    httpserver.expect_ordered_request("/f").respond_with_data("boom", status=500)
    httpserver.expect_ordered_request("/f").respond_with_data("ok", status=200)
    sink = sink_factory(httpserver.url_for("/f"))
    batch = records(2)
    with pytest.raises(TransientError, match="HTTP 500") as info:
        sink.write(batch)
    assert info.value.retry_after is None
    sink.write(batch)
    httpserver.check_assertions()
    assert len(httpserver.log) == 2
    assert httpserver.log[0][0].get_data() == httpserver.log[1][0].get_data()


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(
    httpserver: HTTPServer, sink_factory: MakeSink, status: int
) -> None:
    """429 and 503 raise TransientError carrying Retry-After as retry_after."""
    httpserver.expect_request("/r").respond_with_data(
        "slow down", status=status, headers={"Retry-After": "7"}
    )
    sink = sink_factory(httpserver.url_for("/r"))
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert info.value.retry_after == 7.0
    assert f"HTTP {status}" in str(info.value)


def test_retry_after_http_date_becomes_seconds(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """A Retry-After HTTP date is turned into seconds from now."""
    httpserver.expect_request("/d").respond_with_data(
        "", status=503, headers={"Retry-After": "Wed, 01 Jan 2031 00:01:30 GMT"}
    )
    sink = sink_factory(httpserver.url_for("/d"))
    with freeze_time("2031-01-01 00:00:00"), pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert info.value.retry_after == 90.0


def test_400_is_permanent_with_status_and_body_excerpt(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """Other 4xx raise PermanentError with the status and at most 200 characters of the body."""
    body = "field 'item' is invalid: " + "x" * 1000
    httpserver.expect_request("/bad").respond_with_data(body, status=400)
    sink = sink_factory(httpserver.url_for("/bad"))
    with pytest.raises(PermanentError) as info:
        sink.write(records(1))
    message = str(info.value)
    assert message.startswith("HTTP 400 ")
    assert ": field 'item' is invalid: xxx" in message
    excerpt = message.split(": ", 1)[1]
    assert len(excerpt) == 200
    assert info.value.sink == repr(sink)


def test_redirect_is_permanent(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """A 3xx is not followed: the batch fails permanently, naming the status."""
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/new"}
    )
    sink = sink_factory(httpserver.url_for("/old"))
    with pytest.raises(PermanentError, match="HTTP 301"):
        sink.write(records(1))


def test_basic_auth_from_url_userinfo_is_sent_and_hidden(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """user:pass@ in the URL becomes basic auth; repr and errors never show the password."""
    expected = "Basic " + base64.b64encode(b"svc:pa55word").decode()
    httpserver.expect_request("/a", headers={"Authorization": expected}).respond_with_data(
        "denied for pa55word", status=403
    )
    url = httpserver.url_for("/a").replace("http://", "http://svc:pa55word@")
    sink = sink_factory(url)
    with pytest.raises(PermanentError) as info:
        sink.write(records(1))
    httpserver.check_assertions()
    assert "pa55word" not in repr(sink)
    assert "svc:***@" in repr(sink)
    assert "pa55word" not in str(info.value)
    assert "pa55word" not in (info.value.sink or "")


@pytest.mark.parametrize(
    ("kwargs", "header"),
    [
        ({"auth": ("svc", "pw")}, "Basic " + base64.b64encode(b"svc:pw").decode()),
        ({"auth": "tok-123"}, "Bearer tok-123"),
        ({"headers": {"Authorization": "Token tok-123"}}, "Token tok-123"),
    ],
)
def test_auth_header_is_sent(
    httpserver: HTTPServer,
    sink_factory: MakeSink,
    kwargs: dict[str, object],
    header: str,
) -> None:
    """auth=(user, pw), auth="token" and an explicit header all reach the server."""
    httpserver.expect_request("/h", headers={"Authorization": header}).respond_with_data("")
    sink = sink_factory(httpserver.url_for("/h"), **kwargs)
    sink.write(records(1))
    httpserver.check_assertions()


def test_header_secrets_never_appear_in_repr_or_errors(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """A server echoing the API key or token does not leak it into the error message."""
    httpserver.expect_request("/e").respond_with_data(
        "bad key k-SECRET-1 / token t-SECRET-2", status=401
    )
    url = httpserver.url_for("/e") + "?api_key=q-SECRET-3"
    sink = sink_factory(url, headers={"X-Api-Key": "k-SECRET-1"}, auth="t-SECRET-2")
    with pytest.raises(PermanentError) as info:
        sink.write(records(1))
    for text in (str(info.value), repr(sink), info.value.sink or ""):
        assert "SECRET" not in text
    assert "api_key=q-SECRET-3" in httpserver.log[0][0].url


def test_the_same_client_serves_every_batch(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """open() creates one httpx.Client that later batches reuse; close() releases it."""
    httpserver.expect_request("/c").respond_with_data("")
    sink = sink_factory(httpserver.url_for("/c"))
    sink.open()
    client = sink.client
    for i in range(3):
        sink.write(records(1, start=i))
        assert sink.client is client
    sink.close()
    assert client.is_closed
    sink.write(records(1))
    assert sink.client is not client
    assert len(httpserver.log) == 4


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[tuple[str, int]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.peers.append(self.client_address)  # type: ignore[attr-defined]
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_batches_share_one_keep_alive_connection(sink_factory: MakeSink) -> None:
    """Against a keep-alive server, several batches travel over a single TCP connection."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.peers = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        sink = sink_factory(f"http://127.0.0.1:{server.server_address[1]}/k")
        for i in range(4):
            sink.write(records(2, start=i * 2))
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    peers = server.peers  # type: ignore[attr-defined]
    assert len(peers) == 4
    assert len(set(peers)) == 1


def test_connection_refused_is_transient(sink_factory: MakeSink) -> None:
    """Nothing listening on the port: TransientError, chained to httpx.ConnectError."""
    sink = sink_factory(f"http://127.0.0.1:{free_port()}/x")
    with pytest.raises(TransientError) as info:
        sink.write(records(1))
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_read_timeout_is_transient(sink_factory: MakeSink) -> None:
    """A server that accepts but never answers trips the timeout: TransientError."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sink = sink_factory(f"http://127.0.0.1:{listener.getsockname()[1]}/x", timeout=0.2)
        with pytest.raises(TransientError) as info:
            sink.write(records(1))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


# Every exception httpx exports, with the family the sink must map it to.
_EXPECTED: dict[type[Exception], type[SinkError]] = {
    httpx.ConnectError: TransientError,
    httpx.ConnectTimeout: TransientError,
    httpx.ReadTimeout: TransientError,
    httpx.WriteTimeout: TransientError,
    httpx.PoolTimeout: TransientError,
    httpx.TimeoutException: TransientError,
    httpx.ReadError: TransientError,
    httpx.WriteError: TransientError,
    httpx.CloseError: TransientError,
    httpx.NetworkError: TransientError,
    httpx.RemoteProtocolError: TransientError,
    httpx.ProtocolError: TransientError,
    httpx.ProxyError: TransientError,
    httpx.TransportError: TransientError,
    httpx.DecodingError: TransientError,
    httpx.RequestError: TransientError,
    httpx.LocalProtocolError: PermanentError,
    httpx.UnsupportedProtocol: PermanentError,
    httpx.TooManyRedirects: PermanentError,
    httpx.HTTPStatusError: PermanentError,
    httpx.HTTPError: PermanentError,
    httpx.InvalidURL: PermanentError,
    httpx.CookieConflict: PermanentError,
    httpx.StreamError: PermanentError,
    httpx.StreamConsumed: PermanentError,
    httpx.StreamClosed: PermanentError,
    httpx.ResponseNotRead: PermanentError,
    httpx.RequestNotRead: PermanentError,
}


def test_expected_table_covers_every_httpx_error_class() -> None:
    """Every exception class httpx exports has a mapping expectation (new ones show up here)."""
    exported = {
        obj
        for name in httpx.__all__
        if isinstance(obj := getattr(httpx, name), type) and issubclass(obj, Exception)
    }
    assert exported == set(_EXPECTED)


def _make(cls: type[Exception]) -> Exception:
    request = httpx.Request("POST", "http://u:pw-SECRET@h/x")
    message = "boom from http://u:pw-SECRET@h/x"
    if cls is httpx.HTTPStatusError:
        return cls(message, request=request, response=httpx.Response(418, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls(message, request=request)
    if issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
        return cls()  # these take no message
    return cls(message)


@pytest.mark.parametrize("cls", list(_EXPECTED), ids=lambda c: c.__name__)
def test_every_httpx_error_is_mapped(cls: type[Exception], sink_factory: MakeSink) -> None:
    """Each httpx error raised while sending maps to its spoolkit family, chained, redacted."""
    exc = _make(cls)

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    sink = sink_factory("http://u:pw-SECRET@h/x", transport=httpx.MockTransport(handler))
    with pytest.raises(SinkError) as info:
        sink.write(records(1))
    assert type(info.value) is _EXPECTED[cls]
    assert info.value.__cause__ is exc
    assert "pw-SECRET" not in str(info.value)
    assert type(map_http_failure(exc, "s")) is _EXPECTED[cls]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (204, None),
        (301, PermanentError),
        (400, PermanentError),
        (401, PermanentError),
        (404, PermanentError),
        (408, TransientError),
        (413, PermanentError),
        (422, PermanentError),
        (425, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
    ],
)
def test_status_mapping(status: int, expected: type[SinkError] | None) -> None:
    """2xx accept; 408/425/429/5xx are transient; other 3xx/4xx are permanent."""
    failure = map_http_failure(httpx.Response(status, text="body"), "s")
    assert (type(failure) if failure is not None else None) is expected


def test_unencodable_items_fail_alone(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """Good records are posted; the bad ones are named in PartialFailure, then fail permanently."""
    httpserver.expect_request("/p").respond_with_data("")
    sink = sink_factory(httpserver.url_for("/p"))
    batch = [*records(2), Record("bad", {"b": b"bytes"}, 1.0)]
    with pytest.raises(PartialFailure) as info:
        sink.write(batch)
    assert info.value.failed == ["bad"]
    assert isinstance(info.value.cause, PermanentError)
    assert [r["id"] for r in json.loads(httpserver.log[0][0].get_data())] == ["r0", "r1"]
    with pytest.raises(PermanentError, match="'bad'"):
        sink.write([batch[2]])
    assert len(httpserver.log) == 1


def test_empty_batch_sends_nothing(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """write([]) makes no request."""
    sink = sink_factory(httpserver.url_for("/none"))
    sink.write([])
    assert httpserver.log == []


def test_concurrent_writers_each_deliver_their_batch(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """Eight threads sharing one sink each get their batch posted intact."""
    httpserver.expect_request("/t").respond_with_data("")
    sink = sink_factory(httpserver.url_for("/t"))

    def work(k: int) -> None:
        for j in range(5):
            sink.write(records(3, start=(k * 5 + j) * 3))

    assert errors_in_threads(8, work) == []
    ids = [r["id"] for req, _ in httpserver.log for r in json.loads(req.get_data())]
    assert sorted(ids) == sorted(f"r{i}" for i in range(8 * 5 * 3))


def test_handler_sees_content_type_override(httpserver: HTTPServer, sink_factory: MakeSink) -> None:
    """A Content-Type given in headers wins over the format's default."""

    def handler(request: Request) -> Response:
        return Response(request.headers["Content-Type"])

    httpserver.expect_request("/ct").respond_with_handler(handler)
    sink = sink_factory(httpserver.url_for("/ct"), headers={"Content-Type": "text/plain"})
    sink.write(records(1))
    assert httpserver.log[0][1].get_data(as_text=True) == "text/plain"


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("ftp://h/x", {}),
        ("not a url", {}),
        ("http://h/x", {"format": "xml"}),
        ("http://h/x", {"timeout": 0}),
        ("http://h/x", {"auth": ("only-user",)}),
    ],
)
def test_bad_configuration_is_config_error(url: str, kwargs: dict[str, object]) -> None:
    """A bad URL, format, timeout or auth raises ConfigError at construction."""
    from spoolkit.errors import ConfigError

    with pytest.raises(ConfigError):
        HttpSink(url, **kwargs)  # type: ignore[arg-type]


def test_a_record_with_a_lone_surrogate_is_sent_as_its_json_escape(
    httpserver: HTTPServer, sink_factory: MakeSink
) -> None:
    """An item holding "caf\\udce9" (as a JSON spool gives it back) is posted, valid UTF-8,
    and decodes to the same text; the other records of the batch go with it."""
    httpserver.expect_request("/s").respond_with_data("")
    sink = sink_factory(httpserver.url_for("/s"))
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    sink.write([Record("r0", {"file": name}, 1.0), *records(1, start=1)])
    body = httpserver.log[0][0].get_data()
    assert b"caf\\udce9" in body
    assert [r["item"] for r in json.loads(body.decode("utf-8"))] == [
        {"file": name},
        {"n": 1, "msg": "hello 1"},
    ]
