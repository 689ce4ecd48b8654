"""AsyncHttpSink: HttpSink on ``httpx.AsyncClient``, run on the consumer pool's event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
from collections.abc import Mapping, Sequence

from spoolkit.errors import ConfigError
from spoolkit.sinks._encode import ToJson
from spoolkit.sinks._http_common import HTTPX_ERRORS, Auth, Format, HttpTarget
from spoolkit.typing import Record

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("AsyncHttpSink needs httpx: pip install 'spoolkit[http]'") from exc

__all__ = ["AsyncHttpSink"]

_CLOSE_WAIT = 10.0  # the most seconds close() waits for the client's connections to close


class AsyncHttpSink:
    """POST each batch to ``url`` from ``async def write``: HttpSink on ``httpx.AsyncClient``.

    In a :class:`~spoolkit.Spool`, the sink runs on the consumer pool's event loop: batches
    from several workers are in flight at once, up to ``concurrency`` of them (the default is
    the spool's ``workers``: give the spool at least ``concurrency`` workers). Retries,
    ``sink_timeout``, dead letters and stats are the same as for a sync sink; a call the spool
    gives up on is cancelled.

    Everything else is :class:`~spoolkit.sinks.HttpSink`'s, from the same code: the body
    (``format``, ``gzip``, ``to_json``), the mapping of answers and errors
    (:func:`~spoolkit.sinks.http.map_http_failure`) and the masking of credentials.

    One ``httpx.AsyncClient`` serves every batch on one event loop. It is created at the
    first write on that loop (a client belongs to the loop it was made on) and closed by
    ``close()`` (from any thread but that loop's) or ``await aclose()``.

    Args:
        url: the endpoint, ``http://`` or ``https://``.
        format: ``"json"`` (an array per batch) or ``"ndjson"``.
        gzip: compress the body (``Content-Encoding: gzip``).
        headers: extra request headers.
        auth: ``(user, password)``, a bearer token string, or any ``httpx.Auth``.
        timeout: seconds allowed to connect, and between bytes sent or received.
        to_json: maps a record to a JSON-safe value.
        transport: an ``httpx`` async transport to send through (``httpx.MockTransport`` in
            tests); ``close()`` closes it with the client.
        http2: speak HTTP/2 where the server offers it (over TLS); needs the ``h2`` package
            (``pip install 'httpx[http2]'``).
        concurrency: the most batches in flight at once in a spool; None: the spool's
            ``workers``.

    Raises:
        ConfigError: a bad URL, format, timeout or concurrency.
        ImportError: ``http2=True`` without the ``h2`` package.
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
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        concurrency: int | None = None,
    ) -> None:
        target = HttpTarget(
            "AsyncHttpSink",
            url,
            format=format,
            gzip=gzip,
            headers=headers,
            auth=auth,
            timeout=timeout,
            to_json=to_json,
        )
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigError(
                f"concurrency must be a positive whole number or None, not {concurrency!r}"
            )
        if http2 and importlib.util.find_spec("h2") is None:
            raise ImportError(
                "AsyncHttpSink(http2=True) needs the h2 package: pip install 'httpx[http2]'"
            )
        self._target = target
        self.url = url
        self.format: Format = target.format
        self.gzip = gzip
        self.timeout = target.timeout
        self.http2 = http2
        self.concurrency = concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # clients dropped after a fork: their sockets are the parent's; kept, never closed here
        self._forgotten: list[httpx.AsyncClient] = []

    def __repr__(self) -> str:
        return self._target.description

    def _client_here(self) -> httpx.AsyncClient:
        """The client of the running loop: made here if there is none or it is another's."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._loop is not loop:
            if client is not None and not client.is_closed:
                self._forgotten.append(client)  # another loop's: it cannot be used or closed here
            t = self._target
            client = self._client = httpx.AsyncClient(
                headers=t.headers,
                auth=t.auth,
                timeout=t.timeout,
                follow_redirects=False,
                transport=self._transport,
                http2=self.http2,
            )
            self._loop = loop
        return client

    def open(self) -> None:
        """Nothing to do: the client is made on the event loop, at the first write."""

    def after_fork(self) -> None:
        """In a forked child: forget the parent's client without closing it (its sockets and
        its loop are the parent's); the child's first write makes its own."""
        if self._client is not None:
            self._forgotten.append(self._client)
        self._client = None
        self._loop = None

    async def aclose(self) -> None:
        """Close the client, from the loop it runs on. A later ``write`` makes a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close the client from any thread but its loop's (what a spool does at ``stop``).

        Its loop still running (the spool's, in its thread): the closing runs there and is
        waited for. Its loop stopped: run there until closed. Its loop closed: its
        connections went with it, the client is dropped. Called from inside its own loop, the
        closing is scheduled: prefer ``await aclose()`` there.
        """
        client, loop = self._client, self._loop
        self._client = None
        if client is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(client.aclose())
        elif loop.is_running():
            future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            try:
                future.result(_CLOSE_WAIT)
            except concurrent.futures.TimeoutError:
                future.cancel()
        else:
            loop.run_until_complete(client.aclose())

    async def write(self, batch: Sequence[Record]) -> None:
        """POST the batch and check the answer (as :meth:`HttpSink.write`).

        Raises:
            TransientError: a retryable status or transport error.
            PermanentError: any other non-2xx answer, or no record could be encoded as JSON.
            PartialFailure: some records could not be encoded; the others were accepted.
        """
        if not batch:
            return
        target = self._target
        content, headers, encoded = target.request(batch)
        try:
            response = await self._client_here().post(
                target.send_url, content=content, headers=headers
            )
        except HTTPX_ERRORS as exc:
            raise target.error(exc) from exc
        target.check(response)
        encoded.raise_if_some_bad(target.description)
