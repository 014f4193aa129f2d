"""Checking rules before they run: `nudge check`, rule unit tests, explain."""
