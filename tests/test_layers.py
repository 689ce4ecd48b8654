"""The layers of docs/architecture.md hold in the code: imports only go down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spoolkit"

# layer -> the layers it must never import (directly, at any place in its modules)
FORBIDDEN: dict[str, set[str]] = {
    "_internal": {"queue", "backends", "spool", "producers", "sinks", "cli", "tools", "otel"},
    "queue": {"backends", "spool", "producers", "sinks", "cli", "tools", "deadletter", "otel"},
    "backends": {"spool", "producers", "sinks", "cli", "tools", "otel"},
    "spool": {"producers", "sinks", "cli", "tools"},
    "sinks": {"queue", "backends", "spool", "producers", "cli", "tools"},
    "producers": {"sinks", "cli", "tools"},
    "tools": {"spool", "producers", "sinks", "cli"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str]]:
    """Every (importing module, imported spoolkit module) pair in the package."""
    pairs = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                pairs += [(module, a.name) for a in node.names if a.name.startswith("spoolkit.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "spoolkit":
                    pairs += [(module, f"spoolkit.{a.name}") for a in node.names]
                elif node.module.startswith("spoolkit."):
                    pairs.append((module, node.module))
    return pairs


def test_the_import_scan_sees_the_packages_imports() -> None:
    """The scan finds known imports (so that the rule below cannot pass on an empty scan)."""
    pairs = set(_imports())
    assert ("spoolkit.spool.facade", "spoolkit.backends") in pairs
    assert ("spoolkit.queue.store", "spoolkit.queue.chunk") in pairs


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer: str) -> None:
    """No module of ``layer`` imports a layer above it (storage never imports a sink, the
    queue engine never imports a backend or the spool, ...)."""
    wrong = [
        f"{importer} imports {imported}"
        for importer, imported in _imports()
        if _layer(importer) == layer and _layer(imported) in FORBIDDEN[layer]
    ]
    assert wrong == []


def test_importing_spoolkit_testing_stays_light() -> None:
    """``import spoolkit.testing`` loads neither the crash-loop harness nor the inspector;
    its crash-loop names still resolve on first use."""
    code = (
        "import sys, spoolkit.testing as t\n"
        "heavy = [m for m in sys.modules if m.startswith(('spoolkit.torture', "
        "'spoolkit._torture', 'spoolkit.tools'))]\n"
        "assert heavy == [], heavy\n"
        "assert callable(t.check_sink_under_crash_loop) and t.CrashLoopReport\n"
        "assert 'spoolkit.torture' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
