"""`spoolkit` without the cli extra (click and rich missing) says how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: a meta-path finder refuses click (or rich) as if it were not
# installed, then the console script's entry point runs.
SHIM = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    for key in [k for k in sys.modules if k.partition(".")[0] == {blocked!r}]:
        del sys.modules[key]
    sys.meta_path.insert(0, Block())
    sys.argv = ["spoolkit", *{args!r}]
    from spoolkit.cli import main
    main()
    """
)


@pytest.mark.parametrize("blocked", ["click", "rich"])
@pytest.mark.parametrize("args", [[], ["inspect", "/tmp"], ["--help"]], ids=" ".join)
def test_without_the_cli_extra_spoolkit_prints_the_install_command(
    blocked: str, args: list[str]
) -> None:
    """No click (or no rich): exit 1, the pip command on stderr, no traceback."""
    code = SHIM.format(blocked=blocked, args=args)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'spoolkit[cli]'" in done.stderr
    assert "pip install -e '.[cli]'" in done.stderr
    assert f"missing: {blocked}" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_cli_names_say_how_to_install_the_extra() -> None:
    """`from spoolkit.cli import cli` without click raises ImportError naming the extra."""
    code = SHIM.format(blocked="click", args=[]).replace(
        "from spoolkit.cli import main\nmain()",
        "try:\n    from spoolkit.cli import cli\nexcept ImportError as e:\n    print(e)",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'spoolkit[cli]'" in done.stdout
