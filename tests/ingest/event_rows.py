"""Event rows as `engine.ingest.records.event_row` returns them, for the writer tests."""

from __future__ import annotations

from typing import Any

from engine.ingest.event_staging import EVENT_FIELDS


def event_row(**fields: Any) -> dict[str, Any]:
    """A row with every column `event_row` gives: those not in `fields` empty (no money,
    order, coupon or campaign) and no properties."""
    return {**dict.fromkeys(EVENT_FIELDS), "properties": {}, **fields}
