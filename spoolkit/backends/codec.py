"""What the backends that keep records elsewhere (a Redis stream, a JetStream) share: encoding
records, their ids, and messages handed back kept here to hand out first."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from spoolkit.errors import ClosedError, SerializationError
from spoolkit.typing import Serializer

__all__ = ["Encoded"]


class _Message(Protocol):
    record_id: str


class Encoded:
    """``encode``/``decode`` through the backend's ``_serializer``; ``record_id(s)`` from the
    messages; ``nack`` keeps messages in ``_ready``, handed out first by ``get_batch``."""

    _serializer: Serializer
    _closed: threading.Event
    _description: str
    _lock: threading.Lock
    _ready: collections.deque[Any]

    def encode(self, item: Any) -> bytes:
        """Serialize ``item``.

        Raises:
            SerializationError: the serializer refused it.
        """
        try:
            return self._serializer.dumps(item)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {type(item).__name__} item: {exc}; nothing was stored"
            ) from exc

    def decode(self, payload: bytes) -> Any:
        """Deserialize ``payload``."""
        return self._serializer.loads(payload)

    def record_id(self, message: _Message) -> str:
        """The message's id (or the id a requeued dead letter had first)."""
        return message.record_id

    def record_ids(self, messages: Sequence[_Message]) -> list[str]:
        """``record_id`` of each message."""
        return [m.record_id for m in messages]

    def nack(self, *messages: Any) -> None:
        """Keep the messages here to hand out again first (they stay pending at the server)."""
        if self._closed.is_set():
            raise ClosedError(f"{self._description} is closed")
        with self._lock:
            self._ready.extendleft(reversed(messages))

    def get_batch(self, max_items: int, timeout: float | None) -> Sequence[Any]:
        raise NotImplementedError

    def ack(self, *messages: Any) -> None:
        raise NotImplementedError

    def drop_oldest(self) -> bool:
        """Take one message and acknowledge it unseen."""
        batch = self.get_batch(1, 0)
        self.ack(*batch)
        return bool(batch)
