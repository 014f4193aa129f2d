"""Trigger kinds: what makes a rule consider a user at T (one module per kind).

Each kind turns a rule's trigger into *occurrences*: rows of (user_id,
occurrence_key, occurred_at, event_id). The occurrence key is what at-most-once
planning is keyed on (DESIGN invariant 1), so it must be stable: the id of a stage
entry, of an event, of a schedule slot, of the decision being followed up.
"""

from engine.triggers.registry import TRIGGER_KINDS, occurrences_for

__all__ = ["TRIGGER_KINDS", "occurrences_for"]
