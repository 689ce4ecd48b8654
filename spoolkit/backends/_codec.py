"""Encoding records for a backend that stores bytes elsewhere (a Redis stream, a JetStream)."""

from __future__ import annotations

from typing import Any

from spoolkit.errors import SerializationError
from spoolkit.typing import Serializer

__all__ = ["Encoded"]


class Encoded:
    """``encode``/``decode`` through the backend's ``_serializer``."""

    _serializer: Serializer

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
