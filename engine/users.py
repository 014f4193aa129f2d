"""One user in detail (`nudge users show`): fields, consent, tags, profile, stages, events.

The stage shown is computed as of `now` from the events (the same definition rules
use); the history is what `refresh_stages` recorded, each stay starting when the data
put the user there (`natural_entries`).
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.config import Settings
from engine.errors import NotFoundError
from engine.lifecycle import stage_case, stage_history, users_table
from engine.store.people import Event, Profile, UserTag
from engine.store.profiles import PROFILE_COLUMNS, profiles_as_of

events = Event.__table__
profiles = Profile.__table__
user_tags = UserTag.__table__

RECENT_EVENTS = 20
CONSENT_COLUMNS = ("email_opt_in", "sms_opt_in", "ads_opt_in", "unsubscribed_at")
# Candidates for "did you mean" are fetched by prefix so a million users are never read.
_CANDIDATE_LIMIT = 2000


def user_detail(
    connection: Connection, settings: Settings, user_id: str, now: datetime
) -> dict[str, Any]:
    """Everything stored about one user, with the stage as of `now`."""
    user = (
        connection.execute(sa.select(users_table).where(users_table.c.id == user_id))
        .mappings()
        .first()
    )
    if user is None:
        raise NotFoundError(f"no user {user_id!r}{_did_you_mean(connection, user_id)}")
    # stage_dirty is engine bookkeeping (engine/lifecycle/), not a fact about the user.
    fields = {k: v for k, v in user.items() if k not in CONSENT_COLUMNS and k != "stage_dirty"}
    tags = connection.execute(
        sa.select(user_tags.c.tag).where(user_tags.c.user_id == user_id).order_by(user_tags.c.tag)
    ).scalars()
    profile = (
        connection.execute(
            sa.select(*(profiles.c[name] for name in PROFILE_COLUMNS)).where(
                profiles.c.user_id == user_id
            )
        )
        .mappings()
        .first()
    )
    as_of = profiles_as_of(connection, now)
    stage = connection.execute(
        sa.select(stage_case(users_table, as_of, as_of=now, settings=settings.lifecycle))
        .select_from(users_table.outerjoin(as_of, as_of.c.user_id == users_table.c.id))
        .where(users_table.c.id == user_id)
    ).scalar()
    recent = connection.execute(
        sa.select(
            events.c.occurred_at,
            events.c.type,
            events.c.amount,
            events.c.currency,
            events.c.order_id,
            events.c.coupon_code,
            events.c.utm_source,
            events.c.utm_campaign,
            events.c.source_id,
        )
        .where(events.c.user_id == user_id)
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(RECENT_EVENTS)
    ).mappings()
    return {
        "user": fields,
        "consent": {name: user[name] for name in CONSENT_COLUMNS},
        "tags": list(tags),
        "profile": dict(profile) if profile else None,
        "stage": stage,
        "stage_as_of": now,
        "stage_history": natural_entries(
            stage_history(connection, user_id),
            _money_events(connection, user_id),
            vip_total_spent=settings.lifecycle.vip_total_spent,
        ),
        "recent_events": [dict(row) for row in recent],
    }


def natural_entries(
    history: list[dict], money_events: list[tuple[datetime, str, Any]], *, vip_total_spent
) -> list[dict]:
    """The history with each stay's `entered_at` at the instant the data put the user
    there; `recorded_at` keeps when Nudge recorded it.

    The lifecycle records most stays from the event that starts them (first purchase,
    signup, lapse). Repeat buyer and VIP have no such instant in the stage definition,
    so they are recorded at the refresh that saw them, which after a bulk load is the
    load time. Here they start at the purchase that made the user a repeat buyer (the
    second) or a VIP (the one that took net spend to the threshold); never before the
    previous stay began. A stay whose instant the events cannot give (a VIP by tier)
    keeps its recorded one.
    """
    shown = []
    previous_entry = None
    for row in history:
        row = dict(row)
        recorded_at, entered_at = row.get("recorded_at"), row["entered_at"]
        if row["stage"] in ("repeat_buyer", "vip") and entered_at == recorded_at:
            natural = _entry_by_purchases(
                row["stage"], money_events, previous_entry, recorded_at, vip_total_spent
            )
            if natural is not None:
                row["entered_at"] = natural
        previous_entry = row["entered_at"]
        shown.append(row)
    return shown


def _entry_by_purchases(stage, money_events, not_before, not_after, vip_total_spent):
    purchases, spent = 0, 0
    for occurred_at, kind, amount in money_events:
        if not_after is not None and occurred_at > not_after:
            break
        if kind == "purchase":
            purchases += 1
            spent += amount or 0
        else:  # refund: net spend, as the profile counts it
            spent -= amount or 0
        reached = purchases >= 2 if stage == "repeat_buyer" else spent >= vip_total_spent
        if kind == "purchase" and reached and (not_before is None or occurred_at >= not_before):
            return occurred_at
    return None


def _money_events(connection: Connection, user_id: str) -> list[tuple[datetime, str, Any]]:
    """The user's purchases and refunds, oldest first: (occurred_at, type, amount)."""
    rows = connection.execute(
        sa.select(events.c.occurred_at, events.c.type, events.c.amount)
        .where(events.c.user_id == user_id, events.c.type.in_(("purchase", "refund")))
        .order_by(events.c.occurred_at, events.c.id)
    )
    return [tuple(row) for row in rows]


def _did_you_mean(connection: Connection, user_id: str) -> str:
    """` (did you mean 'u124'?)` when a stored id is close to `user_id`, else ``."""
    exact_case = connection.execute(
        sa.select(users_table.c.id).where(sa.func.lower(users_table.c.id) == user_id.lower())
    ).scalar()
    if exact_case is not None:
        return f" (did you mean {exact_case!r}?)"
    # Typos are mostly near the end: look among ids sharing ever shorter prefixes.
    for length in range(min(len(user_id) - 1, 6), -1, -1):
        prefix = user_id[:length].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        candidates = connection.execute(
            sa.select(users_table.c.id)
            .where(users_table.c.id.like(prefix + "%", escape="\\"))
            .limit(_CANDIDATE_LIMIT)
        ).scalars()
        close = difflib.get_close_matches(user_id, list(candidates), n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""
