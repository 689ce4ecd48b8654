"""What HttpSink and AsyncHttpSink share: options, the request body, the error mapping, and
credential redaction. One place decides each of these for both sinks.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import logging
import math
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, overload

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit._internal.redact import (
    basic_auth_secrets,
    carry_secrets,
    redact_text,
    redact_url,
    secrets_in_header,
    secrets_in_url,
)
from spoolkit.errors import ConfigError, PermanentError, SinkError, TransientError
from spoolkit.sinks._encode import Encoded, ToJson, encode_batch
from spoolkit.typing import Record

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("HttpSink needs httpx: pip install 'spoolkit[http]'") from exc

__all__ = ["HTTPX_ERRORS", "Format", "HttpTarget", "map_http_failure"]

Format = Literal["json", "ndjson"]
Auth = tuple[str, str] | str | httpx.Auth | None

_CONTENT_TYPES: dict[str, str] = {"json": "application/json", "ndjson": "application/x-ndjson"}
_EXCERPT = 200
# Statuses below 500 that still mean "try again later".
_TRANSIENT_4XX = frozenset({408, 425, 429})


class HttpTarget:
    """A validated endpoint and how to send a batch to it, for either HTTP sink.

    Args:
        kind: the sink's class name, for messages and ``repr``.
        url, format, gzip, headers, auth, timeout, to_json: the sink's options (see HttpSink).

    Raises:
        ConfigError: a bad URL, format, timeout or auth.
    """

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        format: Format,  # the option's documented name
        gzip: bool,
        headers: Mapping[str, str] | None,
        auth: Auth,
        timeout: float,
        to_json: ToJson | None,
    ) -> None:
        shown = redact_url(url)
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            # from None: httpx's message may quote the URL, password included.
            raise ConfigError(f"not a valid HTTP URL: {shown!r}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"{kind} needs an http:// or https:// URL with a host: {shown!r}")
        if format not in _CONTENT_TYPES:
            raise ConfigError(f"format must be 'json' or 'ndjson', not {format!r}")
        if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.format: Format = format
        self.gzip = gzip
        self.timeout = float(timeout)
        self.headers = dict(headers or {})
        # userinfo goes to httpx as auth=, never in the URL it logs (an explicit auth wins,
        # as it does in httpx)
        self.send_url = parsed.copy_with(username=None, password=None)
        self.auth = _build_auth(auth)
        if self.auth is None and (parsed.username or parsed.password):
            self.auth = httpx.BasicAuth(parsed.username, parsed.password)
        self.to_json = to_json
        self.description = f"{kind}({shown!r})"
        self.secrets = _secrets(url, self.headers, auth)

    def request(self, batch: Sequence[Record]) -> tuple[bytes, dict[str, str], Encoded]:
        """The body and per-request headers for ``batch``, and its encoding (to raise
        ``PartialFailure`` once the server accepted the records that could be encoded).

        Raises:
            PermanentError: no record could be encoded as JSON.
        """
        encoded = encode_batch(batch, self.to_json)
        encoded.raise_if_all_bad(self.description)
        lines = [line for _, line in encoded.ok]
        body = "\n".join(lines) + "\n" if self.format == "ndjson" else f"[{','.join(lines)}]"
        content = json_utf8(body)  # a lone surrogate ("caf\\udce9") goes as its JSON escape
        headers = {}
        if not any(k.lower() == "content-type" for k in self.headers):
            headers["Content-Type"] = _CONTENT_TYPES[self.format]
        if self.gzip:
            content = gzip_module.compress(content, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return content, headers, encoded

    def error(self, exc: Exception) -> SinkError:
        """:func:`map_http_failure` of an httpx error, with this sink's description and secrets."""
        return map_http_failure(exc, self.description, self.secrets)

    def check(self, response: httpx.Response) -> None:
        """Raise what :func:`map_http_failure` makes of a non-2xx ``response``."""
        failure = map_http_failure(response, self.description, self.secrets)
        if failure is not None:
            raise failure


# Everything httpx raises around a request: its HTTPError tree, and what is not an HTTPError
# (misuse or a bad URL, never fixed by waiting).
HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError)


@overload
def map_http_failure(
    outcome: httpx.Response, sink: str, secrets: Sequence[str] = ()
) -> SinkError | None: ...


@overload
def map_http_failure(outcome: Exception, sink: str, secrets: Sequence[str] = ()) -> SinkError: ...


def map_http_failure(
    outcome: httpx.Response | Exception, sink: str, secrets: Sequence[str] = ()
) -> SinkError | None:
    """Turn an httpx answer or error into a spoolkit error: the one place HttpSink and
    AsyncHttpSink decide.

    - a 2xx response: None (accepted).
    - a 5xx, 408, 425 or 429 response: :class:`TransientError` (with ``retry_after``).
    - any other response: :class:`PermanentError` with the status and a body excerpt.
    - ``UnsupportedProtocol``, ``LocalProtocolError`` (httpx refused to send the request) and
      ``TooManyRedirects``: :class:`PermanentError`.
    - every other ``RequestError``: connect, read, write, pool and proxy errors and timeouts,
      ``RemoteProtocolError``, ``DecodingError``: :class:`TransientError`.
    - ``HTTPStatusError``, ``InvalidURL``, ``CookieConflict``, ``StreamError`` and anything
      else: :class:`PermanentError`.

    Args:
        outcome: the response received, or the exception httpx raised.
        sink: the sink's redacted description.
        secrets: values to mask if the server or httpx echoes them.

    Returns:
        The error to raise, or None for a successful (2xx) response.
    """
    if isinstance(outcome, httpx.Response):
        failure = _status_failure(outcome, sink, secrets)
        return None if failure is None else carry_secrets(failure, secrets)
    return carry_secrets(_exception_failure(outcome, sink, secrets), secrets)


def _exception_failure(exc: Exception, sink: str, secrets: Sequence[str]) -> SinkError:
    name = type(exc).__name__
    detail = _masked_one_line(str(exc), secrets) or "(no message)"
    refused = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.TooManyRedirects)
    if isinstance(exc, refused):
        return PermanentError(f"the request cannot be sent ({name}): {detail}", sink=sink)
    if isinstance(exc, httpx.RequestError):
        return TransientError(f"{name} while sending the batch: {detail}", sink=sink)
    return PermanentError(f"{name}: {detail}", sink=sink)


def _status_failure(
    response: httpx.Response, sink: str, secrets: Sequence[str]
) -> SinkError | None:
    status = response.status_code
    if 200 <= status < 300:  # the 2xx range
        return None
    excerpt = _masked_one_line(response.text, secrets)[:_EXCERPT]
    message = f"HTTP {status} {response.reason_phrase}: {excerpt or '(empty body)'}"
    if status >= 500 or status in _TRANSIENT_4XX:  # the 5xx range
        after = _retry_after(response.headers.get("Retry-After"))
        return TransientError(message, sink=sink, retry_after=after)
    return PermanentError(message, sink=sink)


def _masked_one_line(text: str, secrets: Sequence[str]) -> str:
    """``text`` masked and on one line. Masked before its whitespace is squeezed (a secret
    holding two spaces would no longer match) and again after; and always before it is cut
    to an excerpt (half a secret would not match)."""
    return redact_text(" ".join(redact_text(text, secrets).split()), secrets)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _build_auth(auth: tuple[str, str] | str | httpx.Auth | None) -> httpx.Auth | None:
    if auth is None or isinstance(auth, httpx.Auth):
        return auth
    if isinstance(auth, str):
        return _BearerAuth(auth)
    if isinstance(auth, tuple) and len(auth) == 2:  # (user, password)
        return httpx.BasicAuth(*auth)
    raise ConfigError("auth must be (user, password), a bearer token string, or an httpx.Auth")


def _secrets(
    url: str, headers: Mapping[str, str], auth: tuple[str, str] | str | httpx.Auth | None
) -> list[str]:
    """Every secret the sink sends, in the forms it is sent in (see ``secrets_in_url``)."""
    found = secrets_in_url(url)
    for name, value in headers.items():
        found += secrets_in_header(name, value)
    if isinstance(auth, str):
        found.append(auth)
    elif isinstance(auth, tuple) and len(auth) == 2:  # (user, password)
        found.append(str(auth[1]))
        if auth[1]:
            found += basic_auth_secrets(str(auth[0]), str(auth[1]))
    elif isinstance(auth, httpx.BasicAuth):
        # the only place httpx keeps the credential; read defensively, it is private
        found += secrets_in_header("Authorization", str(getattr(auth, "_auth_header", "")))
    return sorted({s for s in found if s}, key=len, reverse=True)


class _MaskUrlsInHttpxLog(logging.Filter):
    """Masks credentials in the URLs of httpx's own log lines ("HTTP Request: POST <url>").

    httpx logs every request's URL at ``INFO``; a secret query parameter (``?token=``) must
    stay in the URL the server receives, so the line is masked instead, with
    :func:`redact_url` (userinfo passwords and sensitive query values). The filter only
    rewrites arguments that are URLs; it never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) for a in args):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in args)
        return True


def _install_httpx_log_filter() -> None:
    """Add one :class:`_MaskUrlsInHttpxLog` to the ``httpx`` logger (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskUrlsInHttpxLog) for f in logger.filters):
        logger.addFilter(_MaskUrlsInHttpxLog())


_install_httpx_log_filter()


class _BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <token>``; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request
