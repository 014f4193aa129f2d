"""Nudge: rule-driven marketing automation for e-commerce."""

__version__ = "0.1.0"
