"""What every ``spoolkit`` command shares: exit codes, one-line errors, output helpers."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spoolkit._internal.imports import build_reference, is_reference
from spoolkit.errors import ConfigError
from spoolkit.serializers import BUILTIN_NAMES, resolve
from spoolkit.tools import inspect as insp
from spoolkit.typing import Serializer

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "EXIT_BUSY",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "SPOOL_PATH",
    "BadInput",
    "Busy",
    "Failure",
    "console",
    "custom_serializer",
    "emit_json",
    "format_age",
    "format_size",
    "format_when",
    "json_safe",
    "progress",
    "checked_serializer",
    "command_name",
    "serializer_option",
    "spool_serializer",
]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_BUSY = 3

SPOOL_PATH = click.Path(file_okay=True, dir_okay=True, path_type=str)


class Failure(click.ClickException):
    """A one-line error: a problem was found (exit 1)."""

    exit_code = EXIT_PROBLEM


class BadInput(Failure):
    """A one-line error: a bad path or argument (exit 2)."""

    exit_code = EXIT_USAGE


class Busy(Failure):
    """A one-line error: the spool is in use by another process (exit 3)."""

    exit_code = EXIT_BUSY


def console() -> Console:
    """A console for results on stdout: no highlighting, no soft wrapping."""
    return Console(highlight=False, soft_wrap=False)


def command_name() -> str:
    """How to type ``spoolkit`` in the user's shell: ``spoolkit`` when that name runs this
    installation's script, else the script's path (``.venv/bin/spoolkit`` from a clone whose
    virtual environment is not activated), else ``<python> -m spoolkit``."""
    script = os.path.join(os.path.dirname(sys.executable), "spoolkit")
    found = shutil.which("spoolkit")
    if not os.access(script, os.X_OK):
        return "spoolkit" if found else f"{sys.executable} -m spoolkit"
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "spoolkit"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else script


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON with sorted keys."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def json_safe(value: Any) -> Any:
    """``value`` if JSON can carry it as is (recursively), else its ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_safe(v) for k, v in value.items()}
    return repr(value)


def format_size(n: int) -> str:
    """``n`` bytes in B, KiB, MiB or GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float | None) -> str:
    """A duration for people (``12.5s``, ``3m 4s``, ``2h 5m``, ``1d 3h``); ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def format_when(t: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time, to the millisecond."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def progress() -> Progress:
    """A progress display on stderr: description, bar, done/total, elapsed time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def serializer_option(command: F) -> F:
    """``--serializer``: how to read the records, for spools with a custom serializer."""
    return click.option(
        "--serializer",
        "serializer_spec",
        metavar="NAME|MODULE:FACTORY",
        help="How the records were serialized: pickle, json, raw, or 'package.module:factory', "
        "a function of yours returning the serializer (an EncryptedSerializer with its key, "
        "say). Default: the name in meta.json.",
    )(command)


def custom_serializer(spec: str | None) -> str | Serializer | None:
    """What ``--serializer`` asked for: None, a built-in name, or the serializer a factory made.

    Raises:
        ConfigError: ``spec`` is none of these, or the factory gave no serializer.
    """
    if spec is None or spec in BUILTIN_NAMES:
        return spec
    if not is_reference(spec):
        raise ConfigError(
            f"--serializer {spec!r}: want pickle, json, raw or 'package.module:factory'"
        )
    made = build_reference(spec, "loads")
    try:
        return resolve(made)[1]
    except ConfigError as exc:
        raise ConfigError(f"--serializer {spec!r}: {exc}") from None


def spool_serializer(path: str, spec: str | None) -> str | Serializer:
    """The serializer to open the spool at ``path`` with: ``--serializer``'s, else the name in
    its ``meta.json``.

    Raises:
        BadInput: the spool names a custom serializer and ``--serializer`` gave none.
        ConfigError: as :func:`custom_serializer`.
        PathError: ``path`` holds no spool.
    """
    serializer = custom_serializer(spec) or insp.serializer_name(path) or "pickle"
    return checked_serializer(serializer)


def checked_serializer(serializer: str | Serializer) -> str | Serializer:
    """``serializer``, unless it is a custom serializer's name from ``meta.json``.

    Raises:
        BadInput: it is such a name: ``--serializer`` must say how to make it.
    """
    if isinstance(serializer, str) and serializer not in BUILTIN_NAMES:
        raise BadInput(
            f"the spool uses the custom serializer {serializer!r}: name a factory that "
            "makes it with --serializer package.module:factory"
        )
    return serializer
