"""NatsSink: publish each record to NATS JetStream, de-duplicated by record id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from spoolkit._internal.json_utf8 import json_utf8
from spoolkit._internal.redact import carry_secrets
from spoolkit.errors import ConfigError, PartialFailure, SinkError
from spoolkit.sinks._encode import ToJson, encode_batch
from spoolkit.typing import Record

try:
    from nats.aio.client import Client
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("NatsSink needs nats-py: pip install 'spoolkit[nats]'") from exc

# after the check above, so that a missing nats-py names this sink
from spoolkit._internal.nats_client import (
    EventLoopThread,
    connect,
    map_nats_error,
    nats_secrets,
    redact_nats_url,
)
from spoolkit._internal.nats_client import servers as _servers

__all__ = [
    "URL_OPTIONS",
    "EventLoopThread",
    "NatsSink",
    "from_sink_url",
    "map_nats_error",
    "nats_secrets",
    "redact_nats_url",
]

URL_OPTIONS = ("stream", "subject", "timeout")
"""The query options of a ``nats://`` sink URL."""


class NatsSink:
    """Publish each record to a NATS JetStream subject, with ``Nats-Msg-Id`` = ``record.id``.

    JetStream drops a message whose ``Nats-Msg-Id`` it saw within the stream's duplicate
    window (two minutes by default, the stream's ``duplicate_window``): a batch that is
    redelivered (its acknowledgement was lost in a crash) lands once. Within that window,
    delivery is exactly once; beyond it, at least once.

    Each message's payload is the record as JSON (``{"id", "enqueued_at", "item"}`` or what
    ``to_json`` returns). The batch is published in order, without waiting between messages,
    and ``write`` returns once JetStream acknowledged every message (stored it, replicated
    per the stream's settings).

    nats-py is asyncio only: the sink runs its client on a private event loop in a thread of
    its own (started by the first write, stopped by ``close()``), so it works from the spool's
    worker threads and from programs that never use asyncio. The sink is thread-safe.

    Errors map in :func:`map_nats_error`: connection trouble, timeouts, JetStream unavailable
    or full, and no stream listening on the subject are :class:`TransientError`; other
    JetStream API errors (``stream`` names another stream than the subject's) and a message
    over the server's ``max_payload`` are :class:`PermanentError`. When only some messages
    of a batch were acknowledged, :class:`PartialFailure` names the others.

    Args:
        url: ``nats://host:4222`` (``nats://user:pass@host``, ``nats://TOKEN@host``,
            ``tls://host``), or several servers separated by commas.
        subject: the subject to publish to (a stream must capture it).
        stream: the stream expected to store the messages (sent as
            ``Nats-Expected-Stream``; JetStream refuses a message its subject routes elsewhere).
        timeout: seconds to wait for a connection and for each acknowledgement.
        to_json: maps a record to the JSON-safe payload.

    Raises:
        ConfigError: an empty subject, a bad timeout or URL.
    """

    def __init__(
        self,
        url: str,
        subject: str,
        *,
        stream: str | None = None,
        timeout: float = 10.0,
        to_json: ToJson | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("NatsSink needs a nats:// URL string")
        if not isinstance(subject, str) or not subject or any(c in subject for c in " \t\r\n"):
            raise ConfigError(f"subject must be a non-empty NATS subject, not {subject!r}")
        if stream is not None and (not isinstance(stream, str) or not stream):
            raise ConfigError("stream must be a non-empty stream name, or None")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.subject = subject
        self.stream = stream
        self.timeout = float(timeout)
        self.to_json = to_json
        self._servers = _servers(url)
        self._secrets = nats_secrets(url)
        self._description = f"NatsSink({redact_nats_url(url)!r}, subject={subject!r}" + (
            f", stream={stream!r})" if stream else ")"
        )
        self._loop = EventLoopThread("spoolkit-nats-sink")
        self._nc: Client | None = None
        self._connecting: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return self._description

    def open(self) -> None:
        """Nothing to do: the first write connects, so a server that is down at start does not
        keep the spool from buffering."""

    def after_fork(self) -> None:
        """In a forked child: forget the parent's loop thread and client (the child has neither
        the thread nor the right to close the parent's socket); the next write starts afresh."""
        self._loop.forget()
        self._nc = None
        self._connecting = None

    def close(self) -> None:
        """Close the connection (flushing what it buffered) and stop the loop thread."""
        if self._nc is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                self._loop.call(self._close, self.timeout)
        self._loop.stop()
        self._nc = None
        self._connecting = None

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    def write(self, batch: Sequence[Record]) -> None:
        """Publish every record and wait for JetStream's acknowledgements.

        Raises:
            TransientError: connection trouble, a timeout, JetStream unavailable or full, no
                stream listening on the subject.
            PermanentError: JetStream refused every message (another stream than expected, a
                message too large), or no item could be encoded.
            PartialFailure: some messages were not acknowledged, or some items could not be
                encoded; the others were stored.
        """
        if not batch:
            return
        encoded = encode_batch(batch, self.to_json)
        encoded.raise_if_all_bad(self._description)
        messages = [(r, json_utf8(body)) for r, body in encoded.ok]
        # one deadline for the batch: connecting plus the acknowledgements, plus a margin
        try:
            outcomes = self._loop.call(lambda: self._publish(messages), self.timeout * 2 + 5)
        except Exception as exc:  # the connection, or the loop: the whole batch failed
            raise self._map(exc) from exc
        failed = [(r, self._map(o)) for (r, _), o in zip(messages, outcomes, strict=True) if o]
        if failed:
            first = failed[0][1]
            if len(failed) == len(messages) and all(type(e) is type(first) for _, e in failed):
                raise first
            raise carry_secrets(
                PartialFailure(
                    [r.id for r, _ in failed],
                    f"{len(failed)} of {len(messages)} message(s) not acknowledged: {first}",
                    cause=first,
                    sink=self._description,
                ),
                self._secrets,
            )
        encoded.raise_if_some_bad(self._description)

    async def _client(self) -> Client:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            nc = self._nc
            if nc is None or nc.is_closed:
                self._nc = nc = await asyncio.wait_for(
                    connect(self._servers, self.timeout), self.timeout + 1
                )
            return nc

    async def _publish(self, messages: list[tuple[Record, bytes]]) -> list[Exception | None]:
        nc = await self._client()
        js = nc.jetstream(timeout=self.timeout)

        async def one(record: Record, payload: bytes) -> None:
            await js.publish(
                self.subject,
                payload,
                stream=self.stream,
                headers={"Nats-Msg-Id": record.id},
            )

        # gather starts the publishes in batch order: they go out on the wire in that order
        results = await asyncio.gather(*(one(r, p) for r, p in messages), return_exceptions=True)
        out: list[Exception | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # CancelledError and friends: not a delivery outcome
            out.append(result)
        return out

    def _map(self, exc: BaseException) -> SinkError:
        return map_nats_error(exc, self._description, self._secrets)


def from_sink_url(url: str, options: Mapping[str, str] | None = None) -> NatsSink:
    """Build a :class:`NatsSink` from ``nats://host:4222?stream=S&subject=X&timeout=10``.

    Args:
        url: the URL; its query holds the options unless ``options`` is given.
        options: the decoded query options (``subject`` required, ``stream``, ``timeout``).

    Raises:
        ConfigError: no subject, an unknown option or a bad value.
    """
    shown = redact_nats_url(url)
    if options is None:
        from urllib.parse import parse_qsl  # noqa: PLC0415 - only for a URL given whole

        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        names = [n for n, _ in pairs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"option(s) {', '.join(twice)} given twice in {shown!r}")
        options = dict(pairs)
    unknown = sorted(set(options) - set(URL_OPTIONS))
    accepted = "subject (required), stream, timeout"
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} in {shown!r}; accepted: {accepted}"
        )
    subject = options.get("subject", "")
    if not subject:
        raise ConfigError(f"{shown!r} needs the subject= option; accepted: {accepted}")
    timeout = 10.0
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            raise ConfigError(f"option timeout={options['timeout']!r} must be a number") from None
    parts = urlsplit(url)
    return NatsSink(
        urlunsplit((*parts[:3], "", "")),
        subject,
        stream=options.get("stream") or None,
        timeout=timeout,
    )
