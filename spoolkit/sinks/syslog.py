"""SyslogSink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or TLS."""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from spoolkit.errors import ConfigError, PermanentError, TransientError
from spoolkit.sinks._encode import Encoded, dumps
from spoolkit.typing import Record

__all__ = ["FACILITIES", "URL_OPTIONS", "SyslogSink", "format_rfc5424", "from_parsed_url"]

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
"""Facility names and their RFC 5424 codes."""

# logging level names (either case) -> RFC 5424 severity
_SEVERITY = {
    "CRITICAL": 2,
    "FATAL": 2,
    "ERROR": 3,
    "WARNING": 4,
    "WARN": 4,
    "NOTICE": 5,
    "INFO": 6,
    "DEBUG": 7,
    "NOTSET": 7,
}
_BOM = b"\xef\xbb\xbf"
_NIL = "-"
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')
# The field limits of RFC 5424 section 6 (in US-ASCII characters).
_LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}
# Fields of a SpoolHandler dict that have a place in the header or the message.
_HEADER_KEYS = frozenset({"timestamp", "level", "message", "process", "extra"})

ToMessage = Callable[[Record], str]
"""Maps a record to the MSG part of its syslog message."""


def _field(name: str, value: Any) -> str:
    """A header field: printable US-ASCII, cut to its RFC limit, NILVALUE when empty."""
    text = _NOT_PRINTUSASCII.sub("_", str(value))[: _LIMITS[name]] if value is not None else ""
    return text or _NIL


def _check_field(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or _NOT_PRINTUSASCII.search(value):
        raise ConfigError(
            f"{name} must be printable US-ASCII without spaces (RFC 5424), not {value!r}"
        )
    if len(value) > _LIMITS[name]:
        raise ConfigError(f"{name} is at most {_LIMITS[name]} characters (RFC 5424): {value!r}")
    return value


def _sd_name(key: str) -> str:
    return _NOT_SD_NAME.sub("_", key)[:32] or "_"


def _sd_value(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(item: Any, record: Record) -> str:
    stamp = item.get("timestamp") if isinstance(item, dict) else None
    if isinstance(stamp, str) and _ISO.match(stamp):
        return stamp
    moment = datetime.fromtimestamp(record.enqueued_at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default_message(record: Record) -> str:
    item = record.item
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        message = item.get("message", item.get("event"))
        text = message if isinstance(message, str) else dumps(item)
        extras = [item.get("exception"), item.get("stack")]
        return "\n".join([text, *(e for e in extras if isinstance(e, str) and e)])
    return dumps(item)


def format_rfc5424(
    record: Record,
    *,
    facility: int = 1,
    hostname: str | None = None,
    app_name: str | None = None,
    procid: str | None = None,
    msgid: str | None = None,
    sd_id: str = "spoolkit@32473",
    to_message: ToMessage | None = None,
) -> bytes:
    """One record as an RFC 5424 message (without framing), UTF-8.

    The header comes from the item when it is a :class:`~spoolkit.SpoolHandler` or structlog
    dict: severity from ``level``, TIMESTAMP from ``timestamp`` (else the time the record was
    put), PROCID from ``process``. STRUCTURED-DATA holds one element ``[sd_id ...]`` with
    ``id`` (the record id, an idempotency key), ``logger`` and every ``extra`` field (values
    that are not strings as JSON). MSG is the ``message`` (or structlog's ``event``), followed
    by the exception and stack text when there are any, preceded by a UTF-8 BOM as RFC 5424
    asks; it may hold any character, newlines included (octet counting frames it).

    Args:
        record: the record.
        facility: the facility code (0 to 23).
        hostname: HOSTNAME; None for this host's name.
        app_name: APP-NAME; None for NILVALUE.
        procid: PROCID; None for the item's ``process``, else this process's id.
        msgid: MSGID; None for NILVALUE.
        sd_id: the SD-ID of the structured data element.
        to_message: maps the record to MSG instead.

    Raises:
        TypeError, ValueError: the item cannot be encoded (a value JSON cannot hold).
    """
    item = record.item
    data = item if isinstance(item, dict) else {}
    level = str(data.get("level", "INFO")).upper()
    severity = _SEVERITY.get(level, 6)
    pri = facility * 8 + severity
    process = procid if procid is not None else data.get("process", os.getpid())
    params = [f'id="{_sd_value(record.id)}"']
    if isinstance(data.get("logger"), str):
        params.append(f'logger="{_sd_value(data["logger"])}"')
    extra = data.get("extra")
    if not isinstance(extra, dict):  # a structlog event: its own keys are the fields
        extra = {k: v for k, v in data.items() if k not in _HEADER_KEYS and k != "event"}
        extra.pop("logger", None)
    for key, value in extra.items():
        params.append(f'{_sd_name(str(key))}="{_sd_value(value)}"')
    sd = f"[{sd_id} {' '.join(params)}]"
    header = " ".join(
        (
            f"<{pri}>1",
            _timestamp(item, record),
            _field("hostname", hostname or socket.gethostname()),
            _field("app_name", app_name),
            _field("procid", process),
            _field("msgid", msgid),
            sd,
        )
    )
    message = (to_message or _default_message)(record)
    # a lone surrogate ("caf\\udce9") goes as its escape, as the JSON sinks write it: the
    # message stays valid UTF-8
    encoded = message.encode("utf-8", "backslashreplace")
    return header.encode("utf-8", "backslashreplace") + b" " + _BOM + encoded


class SyslogSink:
    """Send each record as an RFC 5424 syslog message over TCP (or TLS) to a syslog server.

    Messages are framed by octet counting (RFC 6587 section 3.4.1: ``LEN SP MSG``), so a
    message may hold newlines and any UTF-8. A batch goes out in one ``sendall`` on one
    connection, kept open between batches; the sink is thread-safe (a lock serialises
    batches on the connection).

    What a successful ``write`` means: syslog over TCP has no acknowledgement, so a batch
    counts as delivered once the kernel took all its bytes. Before each batch the sink checks
    whether the server closed the connection (a restarted server), and reconnects if so: a
    server restarted between batches loses nothing. A server that dies while bytes are in
    flight can lose them; for end-to-end acknowledgement use a sink whose server confirms
    (HTTP, OTLP, PostgreSQL).

    Errors: refused, reset or timed-out connections, a broken pipe and DNS failures are
    :class:`TransientError`; a failed TLS handshake (certificate not trusted, hostname
    mismatch) is :class:`PermanentError`, as is a batch none of whose items can be encoded.

    Args:
        host: the syslog server.
        port: its port (514 for TCP, 6514 for TLS by convention).
        tls: False, True (verify against the system CAs) or an ``ssl.SSLContext``.
        server_hostname: the name to verify the certificate against (``host`` by default).
        facility: a name from :data:`FACILITIES` or a code 0 to 23.
        app_name: APP-NAME (at most 48 characters); the program's name by default.
        hostname: HOSTNAME; this host's name by default.
        procid: PROCID; the item's ``process``, else this process's id, by default.
        msgid: MSGID (at most 32 characters); NILVALUE by default.
        sd_id: the SD-ID of the structured data element (``name@<your IANA enterprise
            number>``; the default uses 32473, the number RFC 5612 sets aside for examples).
        to_message: maps a record to MSG (see :func:`format_rfc5424` for the default).
        timeout: seconds allowed to connect and to send a batch.

    Raises:
        ConfigError: a bad option.
    """

    def __init__(
        self,
        host: str,
        port: int = 514,
        *,
        tls: bool | ssl.SSLContext = False,
        server_hostname: str | None = None,
        facility: str | int = "user",
        app_name: str | None = None,
        hostname: str | None = None,
        procid: str | None = None,
        msgid: str | None = None,
        sd_id: str = "spoolkit@32473",
        to_message: ToMessage | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigError(f"host must be a non-empty host name, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"port must be 1 to 65535, not {port!r}")
        if isinstance(facility, str):
            if facility.lower() not in FACILITIES:
                raise ConfigError(
                    f"unknown facility {facility!r}; use one of {', '.join(FACILITIES)}"
                )
            facility = FACILITIES[facility.lower()]
        if isinstance(facility, bool) or not isinstance(facility, int) or not 0 <= facility < 24:
            raise ConfigError(f"facility must be a name or a code 0 to 23, not {facility!r}")
        if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(sd_id, str) or not sd_id or _NOT_SD_NAME.search(sd_id) or len(sd_id) > 32:
            raise ConfigError(
                f'sd_id must be 1 to 32 printable characters without = ] " or space: {sd_id!r}'
            )
        self.host = host
        self.port = port
        self.facility = facility
        self.app_name = _check_field("app_name", app_name) or _field(
            "app_name", os.path.basename(sys.argv[0] or "") or "python"
        )
        self.hostname = _check_field("hostname", hostname)
        self.procid = _check_field("procid", procid)
        self.msgid = _check_field("msgid", msgid)
        self.sd_id = sd_id
        self.timeout = float(timeout)
        self._to_message = to_message
        self._context: ssl.SSLContext | None
        if tls is True:
            self._context = ssl.create_default_context()
        elif isinstance(tls, ssl.SSLContext):
            self._context = tls
        elif tls is False:
            self._context = None
        else:
            raise ConfigError(f"tls must be True, False or an ssl.SSLContext, not {tls!r}")
        self.server_hostname = server_hostname or host
        scheme = "syslog+tls" if self._context else "syslog+tcp"
        self._description = f"SyslogSink('{scheme}://{host}:{port}')"
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return self._description

    def open(self) -> None:
        """Nothing to do: the first batch connects, so a server that is down at start does
        not keep the spool from buffering."""

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connection without closing it."""
        self._lock = threading.Lock()
        self._sock = None

    def close(self) -> None:
        """Close the connection; a later ``write`` opens a new one."""
        with self._lock:
            self._drop()

    def format(self, record: Record) -> bytes:
        """The framed message sent for ``record``: ``LEN SP MSG``."""
        message = format_rfc5424(
            record,
            facility=self.facility,
            hostname=self.hostname,
            app_name=self.app_name,
            procid=self.procid,
            msgid=self.msgid,
            sd_id=self.sd_id,
            to_message=self._to_message,
        )
        return b"%d %s" % (len(message), message)

    def write(self, batch: Sequence[Record]) -> None:
        """Send the batch's messages in order, on one connection.

        Raises:
            TransientError: the server cannot be reached or dropped the connection.
            PermanentError: the TLS handshake failed, or no item of the batch can be encoded.
            PartialFailure: some items cannot be encoded; the others were sent.
        """
        if not batch:
            return
        frames: list[bytes] = []
        encoded = Encoded()
        for record in batch:
            try:
                frames.append(self.format(record))
                encoded.ok.append((record, ""))
            except Exception as exc:  # a user's to_message may raise anything
                encoded.bad.append((record, exc))
        encoded.raise_if_all_bad(self._description)
        payload = b"".join(frames)
        with self._lock:
            try:
                sock = self._connected()
                sock.sendall(payload)
            except ssl.SSLCertVerificationError as exc:
                self._drop()
                raise PermanentError(
                    f"TLS certificate of {self.server_hostname} not accepted: {exc.verify_message}"
                    "; give the sink an ssl.SSLContext that trusts the server's CA",
                    sink=self._description,
                ) from exc
            except ssl.SSLError as exc:
                self._drop()
                raise PermanentError(
                    f"TLS failed with {self.host}:{self.port}: {exc}", sink=self._description
                ) from exc
            except OSError as exc:  # refused, reset, broken pipe, timeout, DNS (gaierror)
                self._drop()
                raise TransientError(
                    f"{type(exc).__name__} sending to {self.host}:{self.port}: {exc}",
                    sink=self._description,
                ) from exc
        encoded.raise_if_some_bad(self._description)

    def _connected(self) -> socket.socket:
        sock = self._sock
        if sock is not None and not _alive(sock):
            self._drop()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if self._context is not None:
                    sock = self._context.wrap_socket(sock, server_hostname=self.server_hostname)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return sock

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _alive(sock: socket.socket) -> bool:
    """Whether the server kept the connection: a syslog server never sends, so a readable
    socket means it closed (EOF) or reset it. TLS records it sends (session tickets) are
    read and ignored."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(sock.recv(4096))
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


URL_OPTIONS = (
    "app_name",
    "hostname",
    "procid",
    "msgid",
    "facility",
    "sd_id",
    "timeout",
    "ca_file",
    "verify",
)


def from_parsed_url(url: str, options: Mapping[str, str], shown: str) -> SyslogSink:
    """Build a :class:`SyslogSink` from ``syslog+tcp://host:514?app_name=...`` or
    ``syslog+tls://host:6514?ca_file=/path/ca.pem``.

    Args:
        url: the URL (its query is ignored: ``options`` holds it).
        options: the query's options, decoded: ``app_name``, ``hostname``, ``procid``,
            ``msgid``, ``facility``, ``sd_id``, ``timeout``; for TLS ``ca_file`` (a CA bundle
            to trust instead of the system's) and ``verify`` (``false`` skips certificate
            checks: for tests only).
        shown: the URL with credentials masked, for messages.

    Raises:
        ConfigError: another scheme, no host, an unknown option or a bad value.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("syslog+tcp", "syslog+tls"):
        raise ConfigError(f"{shown!r}: a syslog URL is syslog+tcp:// or syslog+tls://")
    unknown = sorted(set(options) - set(URL_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} in {shown!r}; accepted: "
            + ", ".join(URL_OPTIONS)
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{shown!r}: the port must be 1 to 65535") from None
    host = unquote(parts.hostname or "")
    if not host:
        raise ConfigError(f"{shown!r} needs a host, as in syslog+tcp://logs.example.com:514")
    tls: bool | ssl.SSLContext = False
    if scheme == "syslog+tls":
        context = ssl.create_default_context(cafile=options.get("ca_file") or None)
        if options.get("verify", "true").lower() in ("0", "false", "no", "off"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        tls = context
    elif "ca_file" in options or "verify" in options:
        raise ConfigError(f"{shown!r}: ca_file and verify apply to syslog+tls:// only")
    timeout = 10.0
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            raise ConfigError(f"option timeout={options['timeout']!r} must be a number") from None
    facility: str | int = options.get("facility", "user")
    if isinstance(facility, str) and facility.isdigit():
        facility = int(facility)
    return SyslogSink(
        host,
        port or (6514 if tls else 514),
        tls=tls,
        facility=facility,
        app_name=options.get("app_name"),
        hostname=options.get("hostname"),
        procid=options.get("procid"),
        msgid=options.get("msgid"),
        sd_id=options.get("sd_id", "spoolkit@32473"),
        timeout=timeout,
    )
