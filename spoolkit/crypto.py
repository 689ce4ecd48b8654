"""Authenticated encryption at rest: a serializer wrapper using AES-GCM (extra ``crypto``).

```python
from spoolkit import Spool
from spoolkit.crypto import EncryptedSerializer, generate_key

key = generate_key()                      # 32 random bytes; keep it in a secret store
spool = Spool("/var/spool/app", sink=sink, serializer=EncryptedSerializer("json", key))
```

Each record is the inner serializer's bytes, encrypted and authenticated with AES-GCM under a
fresh random 96-bit nonce. A stored record reads::

    b"SKE" | version (1 byte) | key id (4 bytes, big-endian) | nonce (12 bytes)
    | ciphertext | tag (16 bytes)

The first 8 bytes (magic, version, key id) and ``associated_data`` are authenticated with the
record. A record that fails authentication (altered, truncated, or sealed with another key)
raises :class:`~spoolkit.errors.TamperedRecordError` and never reaches the inner serializer's
``loads``; the queue skips and counts it like any record it cannot decode.

Key rotation: encrypt with the current ``key``/``key_id`` and list the keys of older records in
``old_keys`` (key id to key); records sealed with any of them stay readable.

``cryptography`` is imported when this module is, never by ``import spoolkit``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "spoolkit.crypto needs the cryptography package: pip install 'spoolkit[crypto]'"
    ) from exc

from spoolkit.errors import ConfigError, TamperedRecordError, UndecodableRecordError
from spoolkit.serializers import resolve
from spoolkit.typing import Serializer

__all__ = ["MAGIC", "VERSION", "EncryptedSerializer", "generate_key"]

MAGIC = b"SKE"
VERSION = 1
_HEADER = struct.Struct(">3sBI")  # magic, version, key id
_NONCE = 12
_TAG = 16
_OVERHEAD = _HEADER.size + _NONCE + _TAG
_KEY_SIZES = (16, 24, 32)
_MAX_KEY_ID = 0xFFFF_FFFF


def generate_key() -> bytes:
    """Return a new random 256-bit AES key (``os.urandom(32)``)."""
    return os.urandom(32)


class EncryptedSerializer:
    """Wrap a serializer so every record is encrypted and authenticated with AES-GCM.

    Thread-safe: each record gets its own random nonce, and nothing is shared between calls.
    Keep fewer than 2**32 records under one key (the bound for random 96-bit nonces): rotate
    the key well before that.

    Args:
        inner: the serializer of the plaintext: ``"json"``, ``"pickle"``, ``"raw"`` or an
            object with ``dumps``/``loads``.
        key: the current AES key, 16, 24 or 32 bytes (32 recommended; see
            :func:`generate_key`). New records are sealed with it.
        key_id: a number naming ``key`` (0 to 2**32 - 1), stored in each record so that the
            right key is picked to open it.
        old_keys: keys of records written before a rotation, by key id. They only decrypt.
        associated_data: bytes bound to every record without being stored (for instance the
            spool's name), so a record copied into a spool with other associated data fails
            authentication. It must be the same on every open.

    Raises:
        ConfigError: a key of the wrong size or type, a bad key id, or ``old_keys``
            giving ``key_id`` a different key.
    """

    def __init__(
        self,
        inner: str | Serializer,
        key: bytes,
        *,
        key_id: int = 0,
        old_keys: Mapping[int, bytes] | None = None,
        associated_data: bytes = b"",
    ) -> None:
        inner_name, self._inner = resolve(inner)
        self.name = f"aesgcm+{inner_name}"
        old_keys = dict(old_keys or {})
        for kid in (key_id, *old_keys):
            _check_key_id(kid)
        if key_id in old_keys and bytes(old_keys.pop(key_id)) != bytes(key):
            raise ConfigError(f"old_keys gives key id {key_id} a different key than key=")
        keys = {kid: _cipher(kid, k) for kid, k in old_keys.items()}
        self._current = _cipher(key_id, key)
        keys[key_id] = self._current
        self._keys = keys
        self.key_id = key_id
        self._header = _HEADER.pack(MAGIC, VERSION, key_id)
        self._aad = bytes(associated_data)

    @property
    def key_ids(self) -> list[int]:
        """The ids of every key this serializer can decrypt with, sorted."""
        return sorted(self._keys)

    def __repr__(self) -> str:  # never shows key material
        return f"EncryptedSerializer({self.name!r}, key_id={self.key_id}, keys={self.key_ids})"

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj`` with the inner serializer, then encrypt it with the current key.

        Raises:
            TypeError, ValueError: the inner serializer cannot encode ``obj``.
        """
        plaintext = self._inner.dumps(obj)
        nonce = os.urandom(_NONCE)
        header = self._header
        return header + nonce + self._current.encrypt(nonce, plaintext, header + self._aad)

    def loads(self, data: bytes) -> Any:
        """Authenticate and decrypt ``data``, then decode it with the inner serializer.

        Raises:
            TamperedRecordError: authentication failed (the record was altered, or sealed
                with another key or other associated data); the inner serializer never sees it.
            UndecodableRecordError: not a record of this format, or sealed with a key id
                this serializer was not given.
        """
        view = memoryview(data)
        if len(view) < _OVERHEAD:
            raise UndecodableRecordError(
                f"encrypted record is {len(view)} bytes, shorter than the {_OVERHEAD}-byte minimum"
            )
        magic, version, kid = _HEADER.unpack_from(view)
        if magic != MAGIC or version != VERSION:
            raise UndecodableRecordError(
                f"not an encrypted spoolkit record (magic {bytes(magic)!r}, version {version})"
            )
        cipher = self._keys.get(kid)
        if cipher is None:
            raise UndecodableRecordError(
                f"record was encrypted with key id {kid}, not among the key ids given "
                f"{self.key_ids}; pass that key in old_keys"
            )
        start = _HEADER.size
        nonce = bytes(view[start : start + _NONCE])
        try:
            plaintext = cipher.decrypt(
                nonce, bytes(view[start + _NONCE :]), bytes(view[:start]) + self._aad
            )
        except InvalidTag:
            raise TamperedRecordError(
                f"encrypted record failed authentication under key id {kid}: it was altered, "
                "or sealed with another key or other associated_data"
            ) from None
        return self._inner.loads(plaintext)


def _check_key_id(key_id: object) -> None:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= _MAX_KEY_ID:
        raise ConfigError(f"a key id is an int from 0 to {_MAX_KEY_ID}, not {key_id!r}")


def _cipher(key_id: int, key: bytes) -> AESGCM:
    if not isinstance(key, bytes | bytearray) or len(key) not in _KEY_SIZES:
        size = len(key) if isinstance(key, bytes | bytearray | str) else None
        raise ConfigError(
            f"key id {key_id}: an AES key is 16, 24 or 32 bytes (bytes, not text), "
            f"not {type(key).__name__} of length {size}; make one with generate_key()"
        )
    return AESGCM(bytes(key))
