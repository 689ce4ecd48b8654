"""Fixtures that start throwaway PostgreSQL and Redis servers on loopback ports."""
