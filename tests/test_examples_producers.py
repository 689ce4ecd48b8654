"""Smoke tests: the producer examples run to the end and report success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "marker"),
    [
        ("logging_handler.py", "nothing lost, nothing duplicated"),
        ("structlog_pipeline.py", "every event reached the spool's sink"),
    ],
)
def test_example_runs(script: str, marker: str, tmp_path: Path) -> None:
    """The example exits 0 and prints its success line."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert marker in out.stdout
    assert "Traceback" not in out.stderr
