"""SyslogSink: RFC 5424 over TCP (octet counting) against a real rsyslogd, and TLS against a
Python ssl server (Debian's rsyslog package has no TLS driver: rsyslog-gnutls/-openssl are
separate packages)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spoolkit import RetryPolicy, Spool, SpoolHandler
from spoolkit.errors import ConfigError, PartialFailure, PermanentError, TransientError
from spoolkit.sinks.syslog import SyslogSink, format_rfc5424, from_parsed_url
from spoolkit.typing import Record
from tests.services.rsyslog_server import RsyslogServer

pytestmark = pytest.mark.services

_HEADER = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
)


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _mine(tag: str) -> Callable[[list[dict[str, str]]], list[dict[str, str]]]:
    return lambda messages: [m for m in messages if tag in m["raw"]]


def test_handler_records_arrive_with_rfc5424_structure(
    rsyslog_server: RsyslogServer, tmp_path: Path
) -> None:
    """A logging record goes through a Spool to rsyslog with every RFC 5424 field in place."""
    tag = _tag()
    sink = SyslogSink(
        "127.0.0.1", rsyslog_server.port, app_name="billing", msgid="PAY", facility="local3"
    )
    options = {"batch_interval": 0, "workers": 1}  # one worker: the records arrive in order
    handler = SpoolHandler(str(tmp_path / "spool"), sink=sink, spool_options=options)
    logger = logging.getLogger(f"test.syslog.{tag}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.error("paid %s: naïve café ✓\nsecond line", tag, extra={"order": 17, "who": 'a"]b'})
        logger.info("plain %s", tag)
    finally:
        handler.close()
    found = _mine(tag)(rsyslog_server.wait_for(lambda m: len(_mine(tag)(m)) >= 2))
    assert len(found) == 2
    first, second = found
    assert first["pri"] == str(19 * 8 + 3)
    assert first["severity"] == "3"
    assert first["facility"] == "19"
    assert second["severity"] == "6"
    assert first["protocol_version"] == "1"
    assert first["hostname"] == socket.gethostname()
    assert first["app_name"] == "billing"
    assert first["msgid"] == "PAY"
    assert first["procid"] == str(__import__("os").getpid())
    stamp = dt.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp.timestamp() - time.time()) < 60
    sd = first["structured_data"]
    assert sd.startswith('[spoolkit@32473 id="')
    assert f'logger="test.syslog.{tag}"' in sd
    assert 'order="17"' in sd
    assert 'who="a\\"\\]b"' in sd
    # MSG: a BOM, then the UTF-8 text with its newline kept (octet counting frames it)
    assert first["msg"] == f"\ufeffpaid {tag}: naïve café ✓\nsecond line"
    header = _HEADER.match(first["raw"])
    assert header is not None
    assert header["ts"] == first["timestamp"]


def test_a_batch_arrives_whole_in_order_with_message_boundaries(
    rsyslog_server: RsyslogServer,
) -> None:
    """A batch of messages holding newlines and digits at line starts is split exactly as sent."""
    tag = _tag()
    sink = SyslogSink("127.0.0.1", rsyslog_server.port, app_name="t")
    batch = [
        Record(f"{tag}-{i}", f"{tag} {i}\n12 <13>1 fake header\n", time.time()) for i in range(200)
    ]
    sink.write(batch)
    sink.close()
    found = _mine(tag)(rsyslog_server.wait_for(lambda m: len(_mine(tag)(m)) >= 200))
    assert [m["msg"] for m in found] == [f"\ufeff{r.item}" for r in batch]


def test_server_restarted_between_batches_loses_nothing(
    rsyslog_server_factory: Callable[[], RsyslogServer],
) -> None:
    """After rsyslog restarts, the next batch goes on a new connection, not the dead one."""
    server = rsyslog_server_factory()
    sink = SyslogSink("127.0.0.1", server.port, app_name="t")
    sink.write([Record("a", "before", time.time())])
    server.wait_for(lambda m: len(m) == 1)
    server.stop()
    server.start()
    for i in range(3):
        sink.write([Record(f"b{i}", f"after {i}", time.time())])
    sink.close()
    found = server.wait_for(lambda m: len(m) >= 4)
    assert [m["msg"] for m in found] == ["\ufeffbefore", *(f"\ufeffafter {i}" for i in range(3))]


def test_server_down_is_transient_and_the_spool_delivers_once_it_is_up(
    rsyslog_server_factory: Callable[[], RsyslogServer], tmp_path: Path
) -> None:
    """A refused connection is a TransientError; the spool retries until rsyslog is back."""
    server = rsyslog_server_factory()
    server.stop()
    sink = SyslogSink("127.0.0.1", server.port, timeout=2)
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        sink.write([Record("x", "x", time.time())])
    retry = RetryPolicy(initial_wait=0.05, max_wait=0.2, jitter=0)
    with Spool(tmp_path / "spool", sink, batch_interval=0, retry=retry) as spool:
        for i in range(5):
            spool.put(f"queued {i}")
        deadline = time.monotonic() + 10
        while spool.stats().retried == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter with a deadline
        assert spool.stats().retried > 0
        server.start()
        assert spool.flush(timeout=10)
    found = server.wait_for(lambda m: len(m) >= 5)
    assert sorted(m["msg"] for m in found) == [f"\ufeffqueued {i}" for i in range(5)]


def test_unencodable_items_fail_alone() -> None:
    """An item JSON cannot hold fails alone (PartialFailure); a batch of only such is permanent."""
    sink = SyslogSink("127.0.0.1", 9, app_name="t")  # never reached: encoding fails first
    bad = Record("bad", {"message": "m", "extra": {"s": {1, 2}}}, time.time())
    with pytest.raises(PermanentError, match="'bad'"):
        sink.write([bad])
    with pytest.raises(TransientError):  # the good one is sent (port 9 refuses) before
        sink.write([bad, Record("ok", "fine", time.time())])


def test_partial_failure_names_only_the_bad_record(rsyslog_server: RsyslogServer) -> None:
    """With a good and a bad item, the good one is delivered and only the bad id is named."""
    tag = _tag()
    sink = SyslogSink("127.0.0.1", rsyslog_server.port, app_name="t")
    bad = Record("bad", {"message": "m", "extra": {"s": {1, 2}}}, time.time())
    with pytest.raises(PartialFailure) as info:
        sink.write([bad, Record("ok", tag, time.time())])
    sink.close()
    assert info.value.failed == ["bad"]
    rsyslog_server.wait_for(lambda m: len(_mine(tag)(m)) == 1)


def test_structlog_event_and_plain_values() -> None:
    """A structlog dict uses ``event`` as MSG and its other keys as SD params; a dict with
    neither message nor event is sent as JSON."""
    rec = Record("r", {"event": "hi", "level": "warning", "user": 3, "timestamp": "bad"}, 0.5)
    out = format_rfc5424(rec, hostname="h", app_name="a", procid="1", msgid="m")
    assert out == (
        b'<12>1 1970-01-01T00:00:00.500000Z h a 1 m [spoolkit@32473 id="r" user="3"] \xef\xbb\xbfhi'
    )
    assert format_rfc5424(Record("r", {"a": 1}, 0), hostname="h").endswith(b'\xef\xbb\xbf{"a":1}')


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[bytes]]]:
    """A Python TLS server on 127.0.0.1 with a self-signed certificate for 127.0.0.1; yields
    (port, CA file, received bytes per connection)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while chunk := tls.recv(65536):
                        data += chunk
                    received.append(data)
            except (ssl.SSLError, OSError):
                received.append(b"<handshake failed>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, cert_file, received
    stop.set()
    thread.join(5)
    listener.close()


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # polling with a deadline


def test_tls_sends_octet_counted_frames(tls_server: tuple[int, Path, list[bytes]]) -> None:
    """Over TLS (a context trusting the server's CA) each message is framed as LEN SP MSG."""
    port, ca, received = tls_server
    sink = from_parsed_url(
        f"syslog+tls://127.0.0.1:{port}", {"ca_file": str(ca), "app_name": "t"}, "shown"
    )
    sink.write([Record("1", "é\nx", 0.0), Record("2", "second", 0.0)])
    sink.close()
    _wait(lambda: len(received) == 1)
    data = received[0]
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)])
        data = rest[int(length) :]
    assert [f.split(b"\xef\xbb\xbf", 1)[1].decode() for f in frames] == ["é\nx", "second"]
    assert all(f.startswith(b"<14>1 1970-01-01T00:00:00.000000Z ") for f in frames)


def test_tls_untrusted_certificate_is_permanent(
    tls_server: tuple[int, Path, list[bytes]],
) -> None:
    """A server certificate the context does not trust is a PermanentError naming TLS."""
    port, _, _ = tls_server
    sink = SyslogSink("127.0.0.1", port, tls=True)  # system CAs: the self-signed cert fails
    with pytest.raises(PermanentError, match="TLS certificate"):
        sink.write([Record("1", "x", 0.0)])


def test_url_options_and_bad_values() -> None:
    """The URL builder takes the documented options and refuses anything else, by name."""
    sink = from_parsed_url(
        "syslog+tcp://logs.example:1514",
        {"app_name": "api", "msgid": "M", "facility": "local7", "timeout": "3"},
        "shown",
    )
    assert (sink.host, sink.port, sink.app_name, sink.msgid) == ("logs.example", 1514, "api", "M")
    assert sink.facility == 23
    assert sink.timeout == 3.0
    assert repr(sink) == "SyslogSink('syslog+tcp://logs.example:1514')"
    assert from_parsed_url("syslog+tcp://h", {}, "s").port == 514
    assert from_parsed_url("syslog+tls://h", {}, "s").port == 6514
    with pytest.raises(ConfigError, match="'colour'"):
        from_parsed_url("syslog+tcp://h", {"colour": "red"}, "s")
    with pytest.raises(ConfigError, match="ca_file and verify"):
        from_parsed_url("syslog+tcp://h", {"ca_file": "/x"}, "s")
    with pytest.raises(ConfigError, match="needs a host"):
        from_parsed_url("syslog+tcp:///x", {}, "s")
    with pytest.raises(ConfigError, match="facility"):
        SyslogSink("h", facility="space")
    with pytest.raises(ConfigError, match="app_name"):
        SyslogSink("h", app_name="has space")
    with pytest.raises(ConfigError, match="at most 32"):
        SyslogSink("h", msgid="x" * 33)


def test_lone_surrogates_are_sent_as_escapes_in_valid_utf8() -> None:
    """A lone surrogate in the message or a field goes as its escape; the bytes stay UTF-8."""
    rec = Record("r", {"message": "caf\udce9", "extra": {"path": "/tmp/\udcff"}}, 0.0)
    out = format_rfc5424(rec, hostname="h", app_name="a", procid="1")
    text = out.decode("utf-8")
    assert text.endswith("\ufeffcaf\\udce9")
    assert 'path="/tmp/\\udcff"' in text
