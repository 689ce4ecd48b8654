"""The public surface: what `import spoolkit` exports and what it pulls in."""

from __future__ import annotations

import spoolkit
from tests.helpers import python_stdout


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted and every name in it exists."""
    names = [n for n in spoolkit.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in spoolkit.__all__:
        assert hasattr(spoolkit, name), name


def test_core_names_are_exported() -> None:
    """The pqueue-compatible names are importable from the package root."""
    from spoolkit import Empty, Full, Queue  # noqa: F401


def test_import_pulls_in_no_optional_dependency() -> None:
    """`import spoolkit` loads none of httpx, psycopg, redis, click, prometheus_client.

    (rich is left out of the check: structlog, a core dependency, imports it when installed.)
    """
    code = (
        "import sys, spoolkit, spoolkit.sinks\n"
        "heavy = {'httpx', 'psycopg', 'redis', 'click', 'prometheus_client', 'cryptography'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = python_stdout(code)
    assert out.strip() == "[]"


def test_package_is_typed() -> None:
    """The package ships py.typed."""
    from importlib.resources import files

    assert files("spoolkit").joinpath("py.typed").is_file()
