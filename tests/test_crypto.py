"""Encryption at rest: EncryptedSerializer (spoolkit.crypto) with a Queue and a Spool."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from spoolkit import Empty, Queue
from spoolkit.crypto import EncryptedSerializer, generate_key
from spoolkit.errors import ConfigError, TamperedRecordError, UndecodableRecordError
from spoolkit.queue import framing
from spoolkit.queue.framing import CHUNK_HEADER_SIZE, FRAME_HEADER_SIZE, Frame
from spoolkit.testing import MemorySink
from tests.helpers import spool_factory

make_spool = pytest.fixture(name="make_spool")(spool_factory)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MARKER = "plaintext-marker-7f3a9c"


class _Spy:
    """An inner serializer that records every payload its ``loads`` is given."""

    name = "spy"

    def __init__(self) -> None:
        self.loaded: list[bytes] = []

    def dumps(self, obj: Any) -> bytes:
        return str(obj).encode()

    def loads(self, data: bytes) -> Any:
        self.loaded.append(bytes(data))
        return data.decode()


def _items(n: int) -> list[dict[str, Any]]:
    return [{"n": i, "msg": f"{MARKER}-{i}"} for i in range(n)]


def _drain(q: Queue) -> list[Any]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except Empty:
            return out
        q.task_done()


def _frames(path: Path) -> list[tuple[Path, Frame]]:
    """Every frame of every chunk file under ``path``, in order."""
    found = []
    for chunk in sorted(path.glob("q*")):
        data = chunk.read_bytes()
        for f in framing.scan(data, int(chunk.name[1:]), CHUNK_HEADER_SIZE, len(data), 1 << 20):
            assert isinstance(f, Frame)
            found.append((chunk, f))
    return found


def _tamper(chunk: Path, frame: Frame, at: int) -> None:
    """Flip payload byte ``at`` of ``frame`` and recompute the frame CRC so it still checks out."""
    data = bytearray(chunk.read_bytes())
    body = frame.offset + FRAME_HEADER_SIZE
    data[body + at] ^= 0x01
    fields = bytes(data[frame.offset + 4 : frame.offset + 24])
    payload = bytes(data[body : body + frame.length])
    crc = zlib.crc32(payload, zlib.crc32(fields, int(chunk.name[1:])))
    data[frame.offset + 24 : frame.offset + 28] = framing.U32.pack(crc)
    chunk.write_bytes(bytes(data))


def test_queue_roundtrip(tmp_path: Path) -> None:
    """Items put through an EncryptedSerializer come back equal, in order, after a reopen."""
    items = _items(25)
    with Queue(tmp_path / "q", chunksize=10, serializer=EncryptedSerializer("json", KEY)) as q:
        q.put_many(items[:5])
        for item in items[5:]:
            q.put(item)
    with Queue(tmp_path / "q", chunksize=10, serializer=EncryptedSerializer("json", KEY)) as q:
        assert _drain(q) == items


def test_files_on_disk_hold_no_plaintext(tmp_path: Path) -> None:
    """No chunk or metadata file contains the plaintext of a record."""
    with Queue(tmp_path / "q", serializer=EncryptedSerializer("pickle", KEY)) as q:
        q.put_many(_items(10))
        q.sync()
    blobs = [p.read_bytes() for p in (tmp_path / "q").iterdir() if p.is_file()]
    assert blobs
    assert not any(MARKER.encode() in b for b in blobs)


def test_every_record_gets_a_fresh_nonce() -> None:
    """Sealing the same item twice gives different bytes that both decrypt to it."""
    ser = EncryptedSerializer("json", KEY)
    a, b = ser.dumps({"x": 1}), ser.dumps({"x": 1})
    assert a != b
    assert ser.loads(a) == ser.loads(b) == {"x": 1}


def test_record_header_names_magic_version_and_key_id() -> None:
    """A record starts with b'SKE', version 1 and the 4-byte key id."""
    data = EncryptedSerializer("raw", KEY, key_id=258).dumps(b"hello")
    assert data[:8] == b"SKE\x01\x00\x00\x01\x02"
    assert len(data) == 8 + 12 + len(b"hello") + 16


def test_tampered_record_is_skipped_counted_and_never_deserialized(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped ciphertext byte (CRC recomputed) is skipped, counted, logged; the rest arrive."""
    spy = _Spy()
    ser = EncryptedSerializer(spy, KEY)
    with Queue(tmp_path / "q", serializer=ser) as q:
        q.put_many([f"item-{i}" for i in range(5)])
    chunk, frame = _frames(tmp_path / "q")[2]
    _tamper(chunk, frame, at=8 + 12 + 3)  # inside the ciphertext
    spy.loaded.clear()
    with (
        caplog.at_level(logging.ERROR, logger="spoolkit"),
        Queue(tmp_path / "q", serializer=ser) as q,
    ):
        assert _drain(q) == ["item-0", "item-1", "item-3", "item-4"]
        assert q.undecodable == 1
    assert b"item-2" not in spy.loaded
    assert len(spy.loaded) == 4
    assert "record_undecodable" in caplog.text
    assert "TamperedRecordError" in caplog.text


@pytest.mark.parametrize("at", [0, 3, 7, 10, -1], ids=["magic", "version", "keyid", "nonce", "tag"])
def test_tampering_any_part_of_a_record_is_detected(at: int) -> None:
    """A change to the header, nonce or tag makes loads raise a typed undecodable error."""
    spy = _Spy()
    ser = EncryptedSerializer(spy, KEY, key_id=5, old_keys={4: OTHER_KEY})
    data = bytearray(ser.dumps("hello"))
    data[at] ^= 0x01
    with pytest.raises(UndecodableRecordError):
        ser.loads(bytes(data))
    assert spy.loaded == []


def test_tampered_record_raises_tampered_error() -> None:
    """A ciphertext bit flip raises TamperedRecordError (an UndecodableRecordError, ValueError)."""
    ser = EncryptedSerializer("json", KEY)
    data = bytearray(ser.dumps([1, 2, 3]))
    data[-20] ^= 0x80
    with pytest.raises(TamperedRecordError) as info:
        ser.loads(bytes(data))
    assert isinstance(info.value, UndecodableRecordError)
    assert isinstance(info.value, ValueError)


def test_wrong_key_records_are_skipped_and_counted(tmp_path: Path) -> None:
    """Opened with another key under the same id, every record is skipped and counted, kept."""
    with Queue(tmp_path / "q", serializer=EncryptedSerializer("json", KEY)) as q:
        q.put_many(_items(3))
    with Queue(tmp_path / "q", serializer=EncryptedSerializer("json", OTHER_KEY)) as q:
        assert _drain(q) == []
        assert q.undecodable == 3
    with Queue(tmp_path / "q", serializer=EncryptedSerializer("json", KEY)) as q:
        assert _drain(q) == _items(3)  # nothing was lost: the right key reads them all


def test_unknown_key_id_names_the_missing_key() -> None:
    """A record sealed under a key id the serializer lacks raises UndecodableRecordError."""
    data = EncryptedSerializer("json", KEY, key_id=1).dumps(1)
    with pytest.raises(UndecodableRecordError, match="key id 1") as info:
        EncryptedSerializer("json", OTHER_KEY, key_id=2).loads(data)
    assert not isinstance(info.value, TamperedRecordError)


def test_key_rotation_reads_old_records_and_writes_new_ones(tmp_path: Path) -> None:
    """After rotating, records under the old key are read and new ones use the new key id."""
    old = EncryptedSerializer("json", KEY, key_id=1)
    with Queue(tmp_path / "q", serializer=old) as q:
        q.put_many(["a", "b"])
    rotated = EncryptedSerializer("json", OTHER_KEY, key_id=2, old_keys={1: KEY})
    with Queue(tmp_path / "q", serializer=rotated) as q:
        q.put("c")
        assert _drain(q) == ["a", "b", "c"]
    assert rotated.key_ids == [1, 2]
    assert rotated.dumps("d")[4:8] == b"\x00\x00\x00\x02"
    with pytest.raises(UndecodableRecordError):
        old.loads(rotated.dumps("d"))


def test_associated_data_binds_records_to_their_context() -> None:
    """A record sealed with one associated_data fails authentication under another."""
    data = EncryptedSerializer("json", KEY, associated_data=b"spool-a").dumps(1)
    assert EncryptedSerializer("json", KEY, associated_data=b"spool-a").loads(data) == 1
    with pytest.raises(TamperedRecordError):
        EncryptedSerializer("json", KEY, associated_data=b"spool-b").loads(data)


def test_plaintext_record_is_undecodable_not_deserialized() -> None:
    """Bytes that are not an encrypted record raise UndecodableRecordError before any loads."""
    spy = _Spy()
    ser = EncryptedSerializer(spy, KEY)
    for data in (b"", b'{"n": 1}', b"SKE\x02" + bytes(40)):
        with pytest.raises(UndecodableRecordError):
            ser.loads(data)
    assert spy.loaded == []


@pytest.mark.parametrize(
    ("key", "options"),
    [
        (b"short", {}),
        ("x" * 32, {}),
        (KEY, {"key_id": -1}),
        (KEY, {"key_id": 2**32}),
        (KEY, {"old_keys": {3: b"short"}}),
        (KEY, {"key_id": 1, "old_keys": {1: OTHER_KEY}}),
    ],
    ids=["short", "text", "negative-id", "big-id", "bad-old-key", "conflicting-id"],
)
def test_bad_keys_are_config_errors(key: Any, options: dict[str, Any]) -> None:
    """Keys of the wrong size or type, bad ids and conflicting old keys raise ConfigError."""
    with pytest.raises(ConfigError):
        EncryptedSerializer("json", key, **options)


def test_repr_and_errors_never_show_key_material() -> None:
    """Neither repr nor a ConfigError message contains the key bytes."""
    key = b"K" * 31
    with pytest.raises(ConfigError) as info:
        EncryptedSerializer("json", key)
    assert "KKKK" not in str(info.value)
    ser = EncryptedSerializer("json", KEY, key_id=7)
    assert repr(ser) == "EncryptedSerializer('aesgcm+json', key_id=7, keys=[7])"
    assert str(KEY) not in repr(ser)


def test_generate_key_makes_distinct_256_bit_keys() -> None:
    """generate_key returns 32 random bytes, usable as a key."""
    a, b = generate_key(), generate_key()
    assert len(a) == len(b) == 32
    assert a != b
    EncryptedSerializer("json", a)


def test_spool_roundtrip_and_undecodable_in_stats(make_spool: Any, tmp_path: Path) -> None:
    """A Spool delivers encrypted records; a tampered one is skipped and shows in stats()."""
    ser = EncryptedSerializer("json", KEY)
    path = tmp_path / "spool"
    with Queue(path, chunksize=1000, serializer=ser) as q:  # the spool's own disk queue
        q.put_many(_items(6))
    chunk, frame = _frames(path)[4]
    _tamper(chunk, frame, at=40)
    sink = MemorySink()
    with make_spool(sink, path=path, serializer=ser, workers=1) as spool:
        assert spool.flush(10)
        stats = spool.stats()
    assert sink.items == [i for n, i in enumerate(_items(6)) if n != 4]
    assert stats.undecodable == 1
    assert stats.delivered == 5


def test_missing_cryptography_names_the_extra() -> None:
    """Without cryptography, importing spoolkit.crypto says which extra to install."""
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "try:\n    import spoolkit.crypto\n"
        "except ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert "pip install 'spoolkit[crypto]'" in out.stdout


def test_dead_letters_keep_the_payload_encrypted(make_spool: Any, tmp_path: Path) -> None:
    """A dead-lettered record is stored still sealed, and lists back decrypted."""
    from tests.test_security import _Refuse

    path = tmp_path / "spool"
    with make_spool(_Refuse(), path=path, serializer=EncryptedSerializer("json", KEY)) as spool:
        spool.put(_items(1)[0])
        assert spool.flush(10)
        assert [d.record.item for d in spool.dead_letters.list()] == _items(1)
    blobs = [p.read_bytes() for p in (path / "dead").iterdir() if p.is_file()]
    assert not any(MARKER.encode() in b for b in blobs)
