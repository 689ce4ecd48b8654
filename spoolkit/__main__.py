"""``python -m spoolkit``: the ``spoolkit`` command line."""

from __future__ import annotations

from spoolkit.cli import main

if __name__ == "__main__":
    main()
