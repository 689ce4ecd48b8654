"""Where a :class:`~spoolkit.Spool` keeps its records: the :class:`Backend` contract
(:mod:`spoolkit.backends.base`) and the backends spoolkit ships.

The default is :class:`~spoolkit.backends.lanes.LanesBackend`: per-process lanes of
:class:`~spoolkit.backends.disk.DiskBackend` disk queues in the spool directory. A Redis stream
(``Spool(..., backend="redis://...")``) or a NATS JetStream work queue (``backend="nats://..."``)
shares one spool between hosts; any object implementing :class:`Backend` plugs in as
``backend=``.
"""

from __future__ import annotations

import os
from typing import Any

from spoolkit.backends.base import Backend, Message, Undecodable
from spoolkit.backends.disk import DiskBackend
from spoolkit.backends.lanes import LanesBackend
from spoolkit.backends.nats_url import split_url as nats_split_url
from spoolkit.backends.redis_url import check_url
from spoolkit.errors import ConfigError
from spoolkit.typing import Serializer

__all__ = ["Backend", "DiskBackend", "LanesBackend", "Message", "Undecodable", "open_backend"]


def open_backend(
    backend: str | Backend[Any] | None,
    path: str | os.PathLike[str],
    *,
    serializer: str | Serializer,
    fsync: str,
    max_bytes: int | None,
    consume: bool = True,
) -> Backend[Any]:
    """Open the backend ``backend`` names (``None`` or ``"disk"``: the lanes of the spool
    directory ``path``, :class:`spoolkit.backends.lanes.LanesBackend`, which any number of
    processes share; ``"redis://...?stream=S&group=G"``:
    :class:`spoolkit.backends.redis.RedisBackend`; ``"nats://...?stream=S"``:
    :class:`spoolkit.backends.nats.NatsBackend`).

    The disk lanes use chunk files of 1000 records, or with ``max_bytes`` about
    ``max_bytes / 8 KiB`` records (8 to 1000): space on disk is freed a whole chunk file at a
    time, so smaller chunks let a full spool make room in smaller steps.

    ``consume=False`` (a producer-only process) goes with the disk lanes only.

    Raises:
        ConfigError: an unknown backend name or URL, ``consume=False`` with another backend
            than the disk lanes, or a Redis URL without ``stream`` and
            ``group`` or with a bad option (checked before the ``redis`` extra is imported),
            or a NATS URL without ``stream`` or with an unknown option (checked before the
            ``nats`` extra is imported).
        ImportError: a good Redis (NATS) URL without the ``redis`` (``nats``) extra installed.
    """
    if backend is None or backend == "disk":
        chunksize = 1000 if max_bytes is None else max(8, min(1000, max_bytes // 8192))
        return LanesBackend(
            path,
            serializer=serializer,
            fsync=fsync,
            max_bytes=max_bytes,
            chunksize=chunksize,
            consume=consume,
        )
    if not consume:
        raise ConfigError("consume=False goes with the disk lanes (backend=None)")
    if isinstance(backend, str):
        scheme = backend.split("://", 1)[0] if "://" in backend else ""
        if scheme in {"redis", "rediss"}:
            if max_bytes is not None:
                raise ConfigError("max_bytes caps the disk backend; cap a stream with maxlen=")
            check_url(backend)  # before the import: a bad URL is a ConfigError without redis-py
            from spoolkit.backends.redis import RedisBackend  # noqa: PLC0415 - redis is an extra

            return RedisBackend.from_url(backend, serializer=serializer)
        if scheme == "nats":
            if max_bytes is not None:
                raise ConfigError("max_bytes caps the disk backend; cap a JetStream stream itself")
            nats_split_url(backend)  # before the import: a bad URL is a ConfigError without nats-py
            from spoolkit.backends.nats import NatsBackend  # noqa: PLC0415 - nats-py is an extra

            return NatsBackend.from_url(backend, serializer=serializer)
        raise ConfigError(
            f"unknown backend {backend.split('@')[-1]!r}; use None or 'disk' (the disk lanes), "
            "a redis://host/db?stream=S&group=G URL (the redis extra), a "
            "nats://host:4222?stream=S URL (the nats extra), or an object "
            "implementing spoolkit.backends.Backend"
        )
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend {backend!r} does not implement spoolkit.backends.Backend")
    return backend
