"""Smoke tests: every example in examples/ runs to the end and reports success."""

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
        ("outbound_api.py", "ok: every order reached the partner API"),
        ("etl_worker.py", "ok: one row per order, although one batch was written twice"),
        ("fastapi_app.py", "ok: every accepted order's event reached the analytics endpoint"),
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


def test_every_example_has_a_header_and_a_smoke_test() -> None:
    """Each script in examples/ opens with a docstring and is run by some test."""
    tests = Path(__file__).read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert script.read_text().startswith('"""'), script.name
        assert f'"{script.name}"' in tests, f"{script.name} has no smoke test"
