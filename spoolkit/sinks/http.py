"""HttpSink: POST each batch to an HTTP endpoint as a JSON array or NDJSON."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from spoolkit.sinks._encode import ToJson
from spoolkit.sinks._http_common import (
    HTTPX_ERRORS,
    Auth,
    Format,
    HttpTarget,
    map_http_failure,
)
from spoolkit.typing import Record

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("HttpSink needs httpx: pip install 'spoolkit[http]'") from exc

__all__ = ["HttpSink", "map_http_failure"]


class HttpSink:
    """POST each batch to ``url``; a 2xx answer means the whole batch was accepted.

    The body is a JSON array (``format="json"``) or one JSON value per line
    (``format="ndjson"``, ``Content-Type: application/x-ndjson``); each element is
    ``{"id": ..., "enqueued_at": ..., "item": ...}`` unless ``to_json`` maps the record to
    another JSON-safe value. Receivers should treat ``id`` as an idempotency key: a batch whose
    answer was lost is sent again.

    One ``httpx.Client`` (a keep-alive connection pool, safe to share between threads) serves
    every batch; it is created by ``open()`` or at the first write and released by ``close()``.
    Redirects are not followed: point the sink at the final URL.

    How answers and errors map (in :func:`map_http_failure`, the one place that decides, for
    this sink and :class:`~spoolkit.sinks.AsyncHttpSink`):

    - 2xx: accepted.
    - 5xx, 408, 425, 429: :class:`TransientError`; ``Retry-After`` (seconds or an HTTP date)
      becomes ``retry_after``.
    - connection, timeout, proxy and remote protocol errors: :class:`TransientError`.
    - other 3xx and 4xx: :class:`PermanentError` with the status and up to 200 characters of
      the response body; so are a URL scheme httpx cannot speak and a request httpx refuses to
      send (a bad header).

    Credentials in the URL (``https://user:pass@host``) are sent as basic auth: they are taken
    out of the URL and handed to httpx as ``auth=``, so httpx's own ``INFO`` log line ("HTTP
    Request: POST ...") does not show them; the values of secret query parameters
    (``?token=``) in that line are masked by a filter on the ``httpx`` logger. No password,
    token or header value ever appears, in any form it is sent in (raw, percent-encoded, the
    base64 of ``Authorization: Basic``), in ``repr(sink)``, in an error message, or in what a
    spool makes of the error (``stats().last_error``, a dead letter's error and traceback,
    ``spoolkit inspect``), even when the server echoes the request back.

    Args:
        url: the endpoint, ``http://`` or ``https://``.
        format: ``"json"`` (an array per batch) or ``"ndjson"``.
        gzip: compress the body (``Content-Encoding: gzip``).
        headers: extra request headers (an ``Authorization`` header, an API key).
        auth: ``(user, password)`` for basic auth, a string sent as ``Bearer`` token, or any
            ``httpx.Auth``.
        timeout: seconds allowed to connect, and between bytes sent or received.
        to_json: maps a record to a JSON-safe value.
        transport: an ``httpx`` transport to send through instead of the network (custom TLS
            or proxies, or ``httpx.MockTransport`` in tests); ``close()`` closes it with the
            client.

    Raises:
        ConfigError: a bad URL, format or timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        format: Format = "json",  # the option's documented name
        gzip: bool = False,
        headers: Mapping[str, str] | None = None,
        auth: Auth = None,
        timeout: float = 10.0,
        to_json: ToJson | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        target = HttpTarget(
            "HttpSink",
            url,
            format=format,
            gzip=gzip,
            headers=headers,
            auth=auth,
            timeout=timeout,
            to_json=to_json,
        )
        self._target = target
        self.url = url
        self.format: Format = target.format
        self.gzip = gzip
        self.timeout = target.timeout
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return self._target.description

    @property
    def client(self) -> httpx.Client:
        """The shared ``httpx.Client``, created on first use."""
        with self._lock:
            if self._client is None or self._client.is_closed:
                t = self._target
                self._client = httpx.Client(
                    headers=t.headers,
                    auth=t.auth,
                    timeout=t.timeout,
                    follow_redirects=False,
                    transport=self._transport,
                )
            return self._client

    def open(self) -> None:
        """Create the connection pool now rather than at the first write."""
        _ = self.client

    def after_fork(self) -> None:
        """In a forked child: forget the parent's pool (its sockets are the parent's) without
        closing it; the child's first write opens a pool of its own."""
        self._lock = threading.Lock()
        self._client = None

    def close(self) -> None:
        """Close the connection pool. A later ``write`` opens a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def write(self, batch: Sequence[Record]) -> None:
        """POST the batch and check the answer.

        Raises:
            TransientError: a retryable status or transport error (see the class docs).
            PermanentError: any other non-2xx answer, or no record could be encoded as JSON.
            PartialFailure: some records could not be encoded; the others were accepted.
        """
        if not batch:
            return
        target = self._target
        content, headers, encoded = target.request(batch)
        try:
            response = self.client.post(target.send_url, content=content, headers=headers)
        except HTTPX_ERRORS as exc:
            raise target.error(exc) from exc
        target.check(response)
        encoded.raise_if_some_bad(target.description)
