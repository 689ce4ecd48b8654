"""How a newcomer installs spoolkit: from a clone before the first release, without the
deprecated setuptools editable mode."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_install_step_asks_for_the_deprecated_compat_editable_mode() -> None:
    """Neither the Makefile nor pyproject.toml asks setuptools for editable_mode=compat (its
    SetuptoolsDeprecationWarning showed at the first `make demo`)."""
    for name in ("Makefile", "pyproject.toml"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert not re.search(r"editable[_-]mode\s*=?\s*\"?compat", text), name


def test_the_quickstart_installs_from_a_clone_and_keeps_pypi_for_after_the_release() -> None:
    """The quickstart's first command works today (an editable install from the clone); the
    PyPI line is marked for after the first release."""
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    install = text[text.index("## 1. Install") : text.index("## 2.")]
    assert "pip install -e '.[http,cli]'" in install
    assert "uv pip install -e '.[http,cli]'" in install
    pypi = next(line for line in install.splitlines() if "pip install 'spoolkit[" in line)
    assert "after the first release" in pypi
