"""The handler's own JSON text of a log record decodes to what the JSON serializer's would."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from spoolkit import SpoolHandler
from spoolkit.producers._record_json import record_json
from spoolkit.producers.logging_handler import record_to_dict
from spoolkit.serializers import JsonSerializer, JsonText
from spoolkit.testing import MemorySink

_text = st.text()  # quotes, backslashes, controls, astral planes
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text)
_extra = st.dictionaries(
    st.text(), st.recursive(_json_scalar, lambda v: st.lists(v) | st.dictionaries(st.text(), v))
)


@given(
    message=_text,
    name=_text,
    function=st.none() | _text,
    process=st.none() | st.integers(min_value=0),
    exception=st.none() | _text,
    extra=_extra,
)
def test_record_json_decodes_as_the_generic_encoder_would(
    *,
    message: str,
    name: str,
    function: str | None,
    process: int | None,
    exception: str | None,
    extra: dict[str, Any],
) -> None:
    """Any message, logger name, function, pid, exception text and extra: the same JSON value."""
    record = logging.LogRecord(name, logging.INFO, "/p.py", 7, "%s", (message,), None)
    d = record_to_dict(record)
    d.update(function=function, process=process, exception=exception, extra=extra)
    fast = record_json(d)
    assert type(fast) is JsonText
    assert json.loads(fast.data) == json.loads(JsonSerializer().dumps(d))


def test_the_json_serializer_stores_json_text_as_it_is() -> None:
    """JsonText goes through JsonSerializer.dumps unchanged (no second encoding)."""
    text = JsonText(b'{"a":1}')
    assert JsonSerializer().dumps(text) is text.data


def test_a_json_spool_handler_delivers_the_same_records_as_a_generic_one(tmp_path: Path) -> None:
    """A SpoolHandler on a JSON spool (the fast text) and on a raw-dict path deliver equal
    records, truncated ones included."""
    got: dict[str, list[Any]] = {}
    for serializer in ("json", "pickle"):
        sink = MemorySink()
        handler = SpoolHandler(
            tmp_path / serializer,
            sink=sink,
            max_field_chars=64,
            spool_options={"serializer": serializer, "batch_interval": 0},
        )
        log = logging.getLogger("test_record_json.handler")
        log.propagate = False
        log.setLevel(logging.DEBUG)
        log.addHandler(handler)
        try:
            log.warning("plain %s", 'é"\\\n\x00')
            log.info("with extra", extra={"user": 42, "tags": ["a", None, True], "ratio": 0.5})
            log.error("long " * 40)  # over max_field_chars: cut, with "truncated"
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
            assert handler.spool.flush(30)
        finally:
            log.removeHandler(handler)
            handler.close()
        got[serializer] = [
            {k: v for k, v in r.item.items() if k not in ("timestamp", "line", "thread")}
            for r in sink.records
        ]
    assert got["json"] == got["pickle"]
    assert len(got["json"]) == 4
    assert got["json"][2]["truncated"] == {"message": 200}


# Text with lone surrogates: any code point, surrogates included, and surrogateescape's own.
_surrogate_text = st.text(
    alphabet=st.characters(exclude_categories=()) | st.integers(0xDC80, 0xDCFF).map(chr)
)


def _as_json_reads_it(text: str) -> str:
    """``text`` as any JSON decoder reads its escaped form back: a high surrogate directly
    followed by a low one becomes the character the pair encodes; every other code point,
    lone surrogates included, stays."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


@given(message=_surrogate_text, name=_surrogate_text, key=_surrogate_text, value=_surrogate_text)
def test_record_json_escapes_lone_surrogates_and_reads_back_the_same_text(
    *, message: str, name: str, key: str, value: str
) -> None:
    """A message, logger name or extra with lone surrogates: valid UTF-8 that decodes back."""
    record = logging.LogRecord(name, logging.INFO, "/p.py", 7, "%s", (message,), None)
    d = record_to_dict(record)
    d["extra"] = {key: value}
    data = record_json(d).data
    data.decode("utf-8")  # strict: nothing UTF-8 cannot hold
    back = JsonSerializer().loads(data)
    assert back["message"] == _as_json_reads_it(message)
    assert back["logger"] == _as_json_reads_it(name)
    assert back["extra"] == {_as_json_reads_it(key): _as_json_reads_it(value)}
    assert back == json.loads(JsonSerializer().dumps(d))


@given(text=st.text(alphabet=st.characters(codec="utf-8") | st.integers(0xDC80, 0xDCFF).map(chr)))
def test_surrogateescaped_text_reads_back_exactly(text: str) -> None:
    """Text from surrogateescape (only U+DC80..U+DCFF): both paths give back the very same str."""
    record = logging.LogRecord("n", logging.INFO, "/p.py", 7, "%s", (text,), None)
    assert JsonSerializer().loads(record_json(record_to_dict(record)).data)["message"] == text
    assert JsonSerializer().loads(JsonSerializer().dumps({"t": text})) == {"t": text}
