"""Issuing coupons: one code per delivered coupon action, whatever the retries.

Only the coupon action's deliver step (and an email that shows that coupon) calls
this, so dry-runs, previews and rule tests never reserve a code. The row is keyed by
the action's idempotency key: issuing twice returns the first code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.actions.coupon import CouponParams
from engine.coupons.codes import generate_code, normalise_code
from engine.durations import parse_duration
from engine.localtime import day_end
from engine.store.delivery import Coupon
from engine.store.sql import dialect_insert

coupons = Coupon.__table__
MAX_COLLISION_ROUNDS = 5


def expiry(issued_at: datetime, expires_in: str, zone: ZoneInfo) -> datetime:
    """The last instant of the local day `expires_in` after issue.

    Messages print the expiry as a day in the user's time zone ("valid until 14
    November"); a code issued at 10:00 must then still work that evening, so it lasts
    to the end of that day in the same zone the message printed it in.
    """
    last_day = (issued_at + parse_duration(expires_in)).astimezone(zone).date()
    # The last instant of that day (a purchase at 23:59:59.5 is still in time).
    return day_end(last_day, zone) - timedelta(microseconds=1)


def _row(
    action, params: CouponParams, now: datetime, currency: str, zone: ZoneInfo
) -> dict[str, Any]:
    code = generate_code(params.length, params.prefix)
    return {
        "code": code,
        "code_key": normalise_code(code),
        "user_id": action.user_id,
        "rule_id": action.rule_id,
        "idempotency_key": action.idempotency_key,
        "value": params.value,
        "percent_off": params.percent_off,
        "currency": params.currency or currency,
        "min_order": params.min_order,
        "issued_at": now,
        "expires_at": expiry(now, params.expires_in, zone),
    }


def issue_coupons(
    connection: Connection,
    actions: Sequence[Any],
    *,
    now: datetime,
    default_currency: str,
    zone_of: Callable[[str], ZoneInfo],
) -> dict[str, dict[str, Any]]:
    """Ensure a coupon exists for each coupon action; returns them by idempotency key.

    `actions` are PlannedAction-like (idempotency_key, user_id, rule_id, params).
    Invalid params raise pydantic.ValidationError. `zone_of(user_id)` is the zone the
    user's messages print dates in (their own, else the shop's).
    """
    pending = {a.idempotency_key: (a, CouponParams.model_validate(a.params)) for a in actions}
    keys = list(pending)
    for _ in range(MAX_COLLISION_ROUNDS):
        existing = _existing(connection, keys)
        missing = [k for k in keys if k not in existing]
        if not missing:
            return existing
        rows = [
            _row(action, params, now, default_currency, zone_of(action.user_id))
            for action, params in (pending[k] for k in missing)
        ]
        # DO NOTHING on any unique key: an existing key means another attempt issued it
        # first (keep that code); a colliding code (2**-60 odds) is retried next round.
        connection.execute(dialect_insert(connection, coupons).on_conflict_do_nothing(), rows)
    raise RuntimeError("could not issue unique coupon codes; is the code length too short?")


def _existing(connection: Connection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    query = sa.select(coupons).where(coupons.c.idempotency_key.in_(list(keys)))
    return {row.idempotency_key: dict(row._mapping) for row in connection.execute(query)}
