"""Shared fixtures. Service fixtures (PostgreSQL, Redis) live in tests/services/fixtures.py."""

from __future__ import annotations

pytest_plugins = ("tests.services.fixtures",)
