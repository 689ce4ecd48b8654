"""spoolkit's version, written only here: setuptools reads it for the package's metadata
(``[tool.setuptools.dynamic]`` in ``pyproject.toml``)."""

__version__ = "0.1.0"
