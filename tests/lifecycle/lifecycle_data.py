"""Direct Core inserts of users and events for lifecycle tests (no ingest involved)."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from engine.store.people import Event, User, UserTag
from engine.store.profiles import refresh_profiles

_ids = itertools.count(1)


def add_users(connection, now: datetime, *users: dict) -> None:
    rows = []
    for user in users:
        row = {
            "email": None,
            "phone": None,
            "name": None,
            "country": None,
            "timezone": None,
            "locale": None,
            "member_tier": None,
            "member_since": None,
            "unsubscribed_at": None,
            "email_opt_in": False,
            "sms_opt_in": False,
            "ads_opt_in": False,
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        row.update({k: v for k, v in user.items() if k != "tags"})
        rows.append(row)
    connection.execute(User.__table__.insert(), rows)
    tags = [{"user_id": u["id"], "tag": t} for u in users for t in u.get("tags", ())]
    if tags:
        connection.execute(UserTag.__table__.insert(), tags)


def add_events(connection, now: datetime, *events: tuple) -> None:
    """events: (user_id, type, occurred_at[, amount]); profiles refreshed afterwards."""
    rows = []
    for user_id, kind, at, *rest in events:
        amount = Decimal(str(rest[0])) if rest else None
        rows.append(
            {
                "source_id": f"e{next(_ids)}",
                "user_id": user_id,
                "type": kind,
                "occurred_at": at,
                "amount": amount,
                "currency": "CNY" if amount is not None else None,
                "order_id": None,
                "coupon_code": None,
                "utm_source": None,
                "utm_medium": None,
                "utm_campaign": None,
                "utm_content": None,
                "utm_term": None,
                "properties": {},
                "ingested_at": now,
            }
        )
    connection.execute(Event.__table__.insert(), rows)
    refresh_profiles(connection, None, now)
