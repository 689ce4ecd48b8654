"""Fixtures that start a throwaway rsyslog on a loopback port (filled in by issue 20)."""
