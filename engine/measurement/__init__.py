"""Measurement: how much a rule's treated group (or variant B) beats its control (or A)."""
