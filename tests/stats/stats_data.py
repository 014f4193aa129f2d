"""A small hand-made shop whose KPIs are worked out by hand in the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from engine.store.people import Event, User, UserTag
from engine.store.profiles import refresh_profiles

T = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
DAY = timedelta(days=1)

USERS = [
    {"id": "alice", "member_since": T - 30 * DAY, "member_tier": "gold", "name": "Alice"},
    {"id": "bob"},
    {"id": "chen"},
    {"id": "dana", "member_since": T - 10 * DAY},
    {"id": "eve"},
    {"id": "fang", "member_tier": "platinum", "name": "王芳"},
    {"id": "gus"},
    {"id": "hal"},  # never seen
]
EVENTS = [
    ("alice", "purchase", T - 10 * DAY, "100.00"),
    ("alice", "purchase", T - 5 * DAY, "200.50"),
    ("bob", "purchase", T - 20 * DAY, "300.00"),
    ("bob", "refund", T - 19 * DAY, "50.00"),
    ("chen", "visit", T - 3 * DAY, None),
    ("eve", "purchase", T - 120 * DAY, "80.00"),
    ("fang", "purchase", T - 1 * DAY, "1000.00"),
    ("gus", "visit", T - 40 * DAY, None),
    ("gus", "purchase", T + 1 * DAY, "999.00"),  # after T: must not count at T
]


def load_shop(connection) -> None:
    now = T + 2 * DAY
    rows = []
    for user in USERS:
        row = dict.fromkeys(
            ("email", "phone", "country", "timezone", "locale", "unsubscribed_at"), None
        )
        row |= {"name": None, "member_tier": None, "member_since": None, "attributes": {}}
        row |= {"email_opt_in": False, "sms_opt_in": False, "ads_opt_in": False}
        row |= {"created_at": now, "updated_at": now, **user}
        rows.append(row)
    rows[0] |= {"email": "alice@example.com", "email_opt_in": True}
    connection.execute(User.__table__.insert(), rows)
    connection.execute(
        UserTag.__table__.insert(),
        [{"user_id": "alice", "tag": "wholesale"}, {"user_id": "alice", "tag": "beta"}],
    )
    events = []
    for number, (user_id, kind, at, amount) in enumerate(EVENTS):
        event = dict.fromkeys(
            ("order_id", "coupon_code", "utm_source", "utm_medium", "utm_campaign"), None
        )
        event |= {"utm_content": None, "utm_term": None, "properties": {}}
        event |= {
            "source_id": f"s{number}",
            "user_id": user_id,
            "type": kind,
            "occurred_at": at,
            "amount": None if amount is None else Decimal(amount),
            "currency": None if amount is None else "CNY",
            "ingested_at": now,
        }
        if kind == "purchase":
            event["order_id"] = f"o{number}"
        events.append(event)
    connection.execute(Event.__table__.insert(), events)
    refresh_profiles(connection, None, now)
