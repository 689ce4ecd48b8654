"""Smoke tests: the outbound-API and ETL examples run to the end and report success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "marker"),
    [
        ("outbound_api.py", "ok: every order reached the partner API"),
        ("etl_worker.py", "ok: one row per order, although one batch was written twice"),
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
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_examples*.py"))
    for script in sorted(EXAMPLES.glob("*.py")):
        assert script.read_text().startswith('"""'), script.name
        assert f'"{script.name}"' in tests, f"{script.name} has no smoke test"
