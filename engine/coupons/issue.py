"""Issuing coupons: one code per delivered coupon action, whatever the retries.

Only the coupon action's deliver step (and an email that shows that coupon) calls
this, so dry-runs, previews and rule tests never reserve a code. The row is keyed by
the action's idempotency key (with its user): issuing twice returns the first code.

A code is unique across shoppers through `coupon_codes` (a reference table on Citus,
docs/scaling.md): each new code is reserved there first, in the same transaction, and
only the reserved ones become coupons.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.coupons.codes import generate_code, normalise_code
from engine.coupons.params import CouponParams
from engine.durations import parse_duration
from engine.localtime import day_end
from engine.store.delivery import Coupon, CouponCode
from engine.store.sql import dialect_insert

coupons = Coupon.__table__
codes = CouponCode.__table__
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
    action,
    params: CouponParams,
    now: datetime,
    currency: str,
    zone: ZoneInfo,
    expiry_of: Callable[[str, ZoneInfo], datetime],
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
        "expires_at": expiry_of(params.expires_in, zone),
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
    validated = _Validated()
    pending = {a.idempotency_key: (a, validated(a.params)) for a in actions}
    expiry_of = functools.cache(lambda expires_in, zone: expiry(now, expires_in, zone))
    keys = list(pending)
    for _ in range(MAX_COLLISION_ROUNDS):
        existing = _existing(connection, keys)
        missing = [k for k in keys if k not in existing]
        if not missing:
            return existing
        rows = [
            _row(action, params, now, default_currency, zone_of(action.user_id), expiry_of)
            for action, params in (pending[k] for k in missing)
        ]
        # A colliding code (2**-60 odds) is not reserved and is retried next round.
        reserved = _reserve_codes(connection, rows, now)
        rows = [row for row in rows if row["code_key"] in reserved]
        if rows:
            # DO NOTHING: an existing (user, key) means another attempt issued it first.
            connection.execute(dialect_insert(connection, coupons).on_conflict_do_nothing(), rows)
        _release_unused(connection, rows, _existing(connection, keys))
    raise RuntimeError("could not issue unique coupon codes; is the code length too short?")


def _reserve_codes(connection: Connection, rows: list[dict[str, Any]], now: datetime) -> set[str]:
    """Reserve the rows' code keys; returns those reserved for these very rows."""
    reservations = [
        {
            "code_key": row["code_key"],
            "user_id": row["user_id"],
            "idempotency_key": row["idempotency_key"],
            "reserved_at": now,
        }
        for row in rows
    ]
    connection.execute(dialect_insert(connection, codes).on_conflict_do_nothing(), reservations)
    wanted = {row["code_key"]: row["idempotency_key"] for row in rows}
    query = sa.select(codes.c.code_key, codes.c.idempotency_key).where(
        codes.c.code_key.in_(list(wanted))
    )
    return {
        code_key
        for code_key, idempotency_key in connection.execute(query)
        if wanted[code_key] == idempotency_key
    }


def _release_unused(
    connection: Connection, rows: list[dict[str, Any]], issued: dict[str, dict[str, Any]]
) -> None:
    """Give back the codes reserved for actions another attempt issued first."""
    unused = [
        row["code_key"]
        for row in rows
        if issued.get(row["idempotency_key"], {}).get("code_key") != row["code_key"]
    ]
    if unused:
        connection.execute(codes.delete().where(codes.c.code_key.in_(unused)))


def _existing(connection: Connection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    query = sa.select(coupons).where(coupons.c.idempotency_key.in_(list(keys)))
    return {row.idempotency_key: row._asdict() for row in connection.execute(query)}


class _Validated:
    """CouponParams of each distinct params mapping, validated once per call: the
    actions of one rule carry equal params (models are frozen, so sharing is safe)."""

    def __init__(self):
        self.seen: dict[Any, CouponParams] = {}

    def __call__(self, params: dict[str, Any]) -> CouponParams:
        try:
            # With each value's type: 20 and 20.0 are equal keys, not equal Decimals.
            key = tuple(sorted((name, type(value), value) for name, value in params.items()))
            hash(key)
        except TypeError:  # an unhashable value: invalid anyway, let pydantic say why
            return CouponParams.model_validate(params)
        if key not in self.seen:
            self.seen[key] = CouponParams.model_validate(params)
        return self.seen[key]
