"""What the package says about itself: one version, the platforms it runs on, its extras."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import spoolkit
from spoolkit._internal import platform as _platform
from spoolkit.backends.redis_url import check_url
from spoolkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BENCH_ONLY = {"pqueue", "persistqueue", "queuelib", "diskcache"}  # the `bench` extra's modules


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_version_is_written_once() -> None:
    """pyproject.toml has no version of its own; the installed metadata is spoolkit's."""
    project = _project()
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert importlib.metadata.version("spoolkit") == spoolkit.__version__


def test_metadata_says_what_spoolkit_runs_on() -> None:
    """The classifiers name Linux, the Python versions tested, and the shipped types."""
    classifiers = set(importlib.metadata.metadata("spoolkit").get_all("Classifier") or [])
    assert {
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    } <= classifiers
    assert not any(c.startswith("Operating System :: Microsoft") for c in classifiers)


_IMPORT = """
import os, sys
{simulate}
try:
    import spoolkit
except ImportError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("simulate", "lacks"),
    [
        ("sys.modules['fcntl'] = None", "fcntl"),  # Windows
        ("del os.posix_fallocate", "os.posix_fallocate"),  # macOS
    ],
    ids=["no-fcntl", "no-posix_fallocate"],
)
def test_import_on_an_unsupported_platform_explains_itself(simulate: str, lacks: str) -> None:
    """`import spoolkit` without fcntl or os.posix_fallocate: an ImportError that says why."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT.format(simulate=simulate)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.splitlines()
    assert out[0] == "UnsupportedPlatformError"
    assert out[1] == (
        "spoolkit runs on Linux/POSIX only (needs fcntl and os.posix_fallocate); this platform "
        f"is {sys.platform!r}, which lacks {lacks}"
    )


def test_missing_calls_names_what_this_platform_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Here nothing is missing; without fcntl and os.posix_fallocate both are named."""
    assert _platform.missing_calls() == []
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.delattr(os, "posix_fallocate")
    assert _platform.missing_calls() == ["fcntl", "os.posix_fallocate"]


def test_the_dev_extra_holds_the_extras_the_suite_tests() -> None:
    """`pip install -e '.[dev]'` brings every extra the tests import, and no benchmark peer."""
    extras = _project()["optional-dependencies"]
    [itself] = [r for r in extras["dev"] if r.startswith("spoolkit[")]
    # every integration extra (each has tests), not the peers' (bench) nor the site's (docs)
    assert set(itself[len("spoolkit[") : -1].split(",")) == set(extras) - {"dev", "bench", "docs"}
    assert {"http", "postgres", "redis", "cli", "otel", "amqp", "nats"} <= set(extras)
    names = {r.split(">")[0].split("=")[0].split("[")[0] for r in extras["dev"]}
    assert names.isdisjoint({"pqueue", "persist-queue", "queuelib", "diskcache"})


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_test_needs_a_benchmark_peer() -> None:
    """The suite runs without the `bench` extra: no test module imports pqueue and the like.

    (``tests/helpers/pqueue_dirs.py`` imports pqueue only to write the test data again.)
    """
    regenerator = ROOT / "tests" / "helpers" / "pqueue_dirs.py"
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_modules(path) & BENCH_ONLY)
        for path in (ROOT / "tests").rglob("*.py")
        if path != regenerator and _imported_modules(path) & BENCH_ONLY
    }
    assert offenders == {}


_OPEN_WITHOUT_REDIS = """
import sys
sys.modules["redis"] = None  # the redis extra is not installed
from spoolkit.backends import open_backend
from spoolkit.errors import ConfigError
for url in sys.argv[1:]:
    try:
        open_backend(url, "unused", serializer="pickle", fsync="interval", max_bytes=None)
    except ConfigError as exc:
        print("ConfigError", exc)
    except ImportError as exc:
        print("ImportError", exc)
"""


def test_a_bad_redis_url_is_a_config_error_without_the_redis_extra() -> None:
    """open_backend checks a Redis URL before importing redis: a bad one is a ConfigError, a
    good one names the missing extra."""
    urls = [
        "redis://localhost:6379/0",
        "redis://h/0?stream=s",
        "redis://h/0?stream=s&group=g&claim_idle=soon",
        "redis://h/0?stream=s&group=g&max_deliveries=0",
        "redis://h/0?stream=s&group=g",
    ]
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_WITHOUT_REDIS, *urls],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.splitlines()
    assert len(out) == len(urls)
    assert [line.split()[0] for line in out] == ["ConfigError"] * 4 + ["ImportError"]
    assert "lacks stream and group" in out[0]
    assert "lacks group" in out[1]
    assert "claim_idle must be a float" in out[2]
    assert "max_deliveries must be >= 1" in out[3]
    assert "pip install 'spoolkit[redis]'" in out[4]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?group=g", "lacks stream"),
        ("redis://h/0?stream=s&group=", "lacks group"),
        ("redis://h/0?stream=s&group=g&consumer=", "consumer must be a non-empty string"),
        ("redis://h/0?stream=s&group=g&maxlen=0", "maxlen must be >= 1"),
        ("redis://h/0?stream=s&group=g&claim_idle=0", "claim_idle must be > 0"),
    ],
)
def test_check_url_refuses_bad_backend_options(url: str, message: str) -> None:
    """The Redis backend URL's own options are checked without redis-py."""
    with pytest.raises(ConfigError, match=message):
        check_url(url)


def test_check_url_leaves_redis_py_options_alone() -> None:
    """Options that are not the backend's are left to redis-py (checked once it is imported)."""
    check_url("redis://:pw@h:6379/0?stream=s&group=g&consumer=c&socket_timeout=3&maxlen=10")
