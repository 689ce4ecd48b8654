"""The Redis Streams backend: :class:`RedisBackend` (needs the ``redis`` extra).

``backend`` is the :class:`~spoolkit.backends.Backend`; ``reader`` and ``writer`` talk to the
stream, ``entries`` turns stream entries into messages, ``options`` connects from a URL (checked
first, without redis-py, by :mod:`spoolkit.backends.redis_url`).
"""

from spoolkit.backends.redis.backend import RedisBackend
from spoolkit.backends.redis.entries import StreamMessage

__all__ = ["RedisBackend", "StreamMessage"]
