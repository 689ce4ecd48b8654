"""spoolkit.testing.check_sink_under_crash_loop, run on a user-style JSON Lines sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spoolkit.testing import check_sink_under_crash_loop


def _read_jsonl(sink_dir: str) -> list[Any]:
    path = Path(sink_dir, "out.jsonl")
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["item"] for line in lines]


def test_jsonl_sink_survives_the_crash_loop(tmp_path: Path) -> None:
    """A JSONL sink under 8 kills holds every record whose put returned, intact."""
    report = check_sink_under_crash_loop(
        "tests.torture.user_sink:build", cycles=8, directory=tmp_path, read_back=_read_jsonl
    )
    assert report.ok
    assert report.records > 0
    assert report.lost == 0
    assert len(_read_jsonl(str(tmp_path / "sink"))) >= report.records


def test_sink_that_drops_batches_fails_the_check(tmp_path: Path) -> None:
    """A sink that returns without writing is caught through read_back, with a clear message."""
    with pytest.raises(AssertionError, match="missing from the destination"):
        check_sink_under_crash_loop(
            "tests.torture.user_sink:build_losing",
            cycles=2,
            directory=tmp_path,
            read_back=_read_jsonl,
        )


def test_exactly_once_is_checked_when_asked(tmp_path: Path) -> None:
    """With allow_duplicates=False, an item found twice in the destination is reported."""

    def twice(sink_dir: str) -> list[Any]:
        items = _read_jsonl(sink_dir)
        return items + items[:1]

    with pytest.raises(AssertionError, match=r"holds \d+ duplicate item"):
        check_sink_under_crash_loop(
            "tests.torture.user_sink:build",
            cycles=2,
            directory=tmp_path,
            read_back=twice,
            allow_duplicates=False,
        )
