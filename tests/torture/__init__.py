"""Crash-loop torture, load, and the crash-loop kit for users (issue 7, items 1, 4, 7)."""
