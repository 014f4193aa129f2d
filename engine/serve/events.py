"""Recording `landing_view` and `email_click`/`sms_click` events the way ingest does.

Each event goes through `event_row` (the ingest validation) and `BatchWriter` (the
events table's invariants: stored once per (user, source_id), profiles refreshed,
unsubscribe events applied), and `signal_change` wakes the daemons, all in one
transaction. Only known users are recorded (`require_users`): a signed token names
a user the store had, and a deleted one is not created again by a click.

Deduplication: the source id is a hash of (kind, token, minute), so a reload or a
double click within the same minute records once, a later visit records again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from engine.ingest.money import ShopCurrency
from engine.ingest.records import event_row
from engine.ingest.writers import BatchWriter
from engine.store.changes import signal_change
from engine.store.database import Store

CLICK_IDS = ("gclid", "fbclid", "ttclid")


def dedup_id(kind: str, token: str, now: datetime) -> str:
    minute = now.strftime("%Y-%m-%dT%H:%M")
    return f"serve-{kind}-" + hashlib.sha256(f"{kind}\n{token}\n{minute}".encode()).hexdigest()[:40]


def record_event(store: Store, record: dict[str, Any], *, now: datetime) -> bool:
    """Store one event record (ingest's field names); True if it was new."""
    settings = store.settings
    row = event_row(record, settings.tz, ShopCurrency.of(settings))
    with store.connect() as connection:
        writer = BatchWriter(connection, now)
        writer.create_temp_tables()
        try:
            with connection.begin():
                result = writer.write_events([row], require_users=True)
                if result.inserted:
                    signal_change(connection)
        finally:
            if connection.in_transaction():
                connection.rollback()
            with connection.begin():
                writer.drop_temp_tables()
    return bool(result.inserted)
