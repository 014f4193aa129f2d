"""Issuing coupons: one code per delivered coupon action, whatever the retries.

Only the coupon action's deliver step (and an email that shows that coupon) calls
this, so dry-runs, previews and rule tests never reserve a code. The row is keyed by
the action's idempotency key: issuing twice returns the first code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.actions.coupon import CouponParams
from engine.coupons.codes import generate_code, normalise_code
from engine.durations import parse_duration
from engine.store.delivery import Coupon
from engine.store.sql import dialect_insert

coupons = Coupon.__table__
MAX_COLLISION_ROUNDS = 5


def _row(action, params: CouponParams, now: datetime, currency: str) -> dict[str, Any]:
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
        "expires_at": now + parse_duration(params.expires_in),
    }


def issue_coupons(
    connection: Connection,
    actions: Sequence[Any],
    *,
    now: datetime,
    default_currency: str,
) -> dict[str, dict[str, Any]]:
    """Ensure a coupon exists for each coupon action; returns them by idempotency key.

    `actions` are PlannedAction-like (idempotency_key, user_id, rule_id, params).
    Invalid params raise pydantic.ValidationError.
    """
    pending = {a.idempotency_key: (a, CouponParams.model_validate(a.params)) for a in actions}
    keys = list(pending)
    for _ in range(MAX_COLLISION_ROUNDS):
        existing = _existing(connection, keys)
        missing = [k for k in keys if k not in existing]
        if not missing:
            return existing
        rows = [_row(pending[k][0], pending[k][1], now, default_currency) for k in missing]
        # DO NOTHING on any unique key: an existing key means another attempt issued it
        # first (keep that code); a colliding code (2**-60 odds) is retried next round.
        connection.execute(dialect_insert(connection, coupons).on_conflict_do_nothing(), rows)
    raise RuntimeError("could not issue unique coupon codes; is the code length too short?")


def _existing(connection: Connection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    query = sa.select(coupons).where(coupons.c.idempotency_key.in_(list(keys)))
    return {row.idempotency_key: dict(row._mapping) for row in connection.execute(query)}
