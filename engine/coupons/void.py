"""Voiding coupons whose carrying message never reached the shopper.

A coupon is shown to its shopper by the email or SMS of the same decision
(outbox.decision_id). When every such message of the decision ended `skipped` or
`dead`, the shopper never saw the code: it is voided (`voided_at`, `void_reason` such
as `message_skipped:unsubscribed` or `message_dead:rejected`), is refused at
redemption (`void`) and costs nothing. A decision without any email or SMS (a coupon
shown in the shop's account page) never voids its coupon, and a redeemed coupon is
never voided: someone evidently had the code.

The void is a function of the outbox states, so settling is idempotent: a message
that is retried (`nudge retry`) and then sent, or is pending again, makes its coupon
live again; a later failure voids it again.

Settling runs after the dispatcher has committed the outcomes of a batch, in its own
transaction, for the decisions of that batch's coupon, email and SMS actions. Running
after the commit matters on PostgreSQL with several dispatchers: if dispatcher A issues
a coupon while dispatcher B records the decision's email as dead, either B's settle
(which starts after B committed) sees A's coupon, or A's settle (which starts after A
issued the coupon) sees B's committed outcome; inside B's record transaction both
could miss each other. Redemption settles the coupons it is about to judge, so a
dispatcher that died between its commit and its settle leaves no live void coupon.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection
from sqlalchemy.dialects.postgresql import ARRAY

from engine.store import Store
from engine.store.delivery import Coupon
from engine.store.distribute import users_distributed
from engine.store.planning import OutboxAction
from engine.store.sql import among

coupons = Coupon.__table__
outbox = OutboxAction.__table__

MESSAGE_KINDS = ("email", "sms")
FAILED_STATES = ("skipped", "dead")
FINAL_STATES = ("sent", "skipped", "dead")
# The kinds whose final outcome can change whether a decision's coupon is live.
SETTLING_KINDS = ("coupon", *MESSAGE_KINDS)
VOID_PREFIX = "message_"


def live() -> ColumnElement[bool]:
    """The condition for a coupon that counts: issued and not voided.

    Anything that counts issued coupons or their cost must filter with this.
    """
    return coupons.c.voided_at.is_(None)


def _messages(decision: ColumnElement[Any]):
    message = outbox.alias("message")
    query = sa.select(message.c.id).where(
        message.c.decision_id == decision, message.c.kind.in_(MESSAGE_KINDS)
    )
    return message, query


def undelivered(decision: ColumnElement[Any]) -> ColumnElement[bool]:
    """The decision has an email or SMS, and every one of them was skipped or went dead."""
    message, query = _messages(decision)
    return sa.and_(sa.exists(query), ~sa.exists(query.where(message.c.state.not_in(FAILED_STATES))))


def void_reason(decision: ColumnElement[Any]) -> ColumnElement[str]:
    """`message_<state>:<reason>` of the decision's first message (lowest id)."""
    message, query = _messages(decision)
    text = (
        sa.literal(VOID_PREFIX)
        + message.c.state
        + sa.func.coalesce(sa.literal(":") + message.c.reason, sa.literal(""))
    )
    return (
        query.with_only_columns(sa.func.substr(text, 1, 64))
        .order_by(message.c.id)
        .limit(1)
        .scalar_subquery()
    )


def _decision_of_coupon() -> ColumnElement[Any]:
    # A coupon carries its coupon action's idempotency key (unique in the outbox).
    action = outbox.alias("coupon_action")
    return (
        sa.select(action.c.decision_id)
        .where(action.c.idempotency_key == coupons.c.idempotency_key)
        # Nested two levels down (in an EXISTS): auto-correlation only looks one up.
        .correlate(coupons)
        .scalar_subquery()
    )


def settle_coupons(
    connection: Connection,
    *,
    now: datetime,
    decision_ids: Sequence[int] | None = None,
    scope: ColumnElement[bool] | None = None,
) -> tuple[int, int]:
    """Void the coupons of undelivered decisions, revive those voided by a message that
    is now pending or sent; returns (voided, revived).

    Limited to the coupons of `decision_ids` and/or those matching `scope` (a condition
    on the coupons table); with neither, every coupon is settled.
    """
    if users_distributed(connection):
        return _settle_on_citus(connection, now=now, decision_ids=decision_ids, scope=scope)
    if decision_ids is not None and not decision_ids:
        return 0, 0
    if scope is None and decision_ids is not None:
        # The dispatcher's call, once per batch: statements built once (their column
        # collections and cache keys are a visible cost per batch otherwise).
        void, revive = _settle_statements()
    else:
        conditions = [] if scope is None else [scope]
        if decision_ids is not None:
            conditions.append(coupons.c.idempotency_key.in_(_coupon_keys_of_decisions()))
        void, revive = _void_and_revive(conditions)
    values: dict[str, Any] = {"now": now}
    if decision_ids is not None:
        values["decision_ids"] = sorted(set(decision_ids))
    voided = connection.execute(void, values).rowcount
    revived = connection.execute(revive, values).rowcount
    return voided, revived


def _coupon_keys_of_decisions() -> sa.Select:
    """The coupon-action keys of the decisions bound as `decision_ids`."""
    return sa.select(outbox.c.idempotency_key).where(
        outbox.c.decision_id.in_(sa.bindparam("decision_ids", expanding=True)),
        outbox.c.kind == "coupon",
    )


@functools.cache
def _settle_statements() -> tuple[sa.Update, sa.Update]:
    return _void_and_revive([coupons.c.idempotency_key.in_(_coupon_keys_of_decisions())])


def _void_and_revive(conditions: list[ColumnElement[bool]]) -> tuple[sa.Update, sa.Update]:
    """The two UPDATEs of a settle over the coupons matching `conditions`; the instant
    is bound as `now`."""
    decision = _decision_of_coupon()
    void = (
        sa.update(coupons)
        .where(
            *conditions,
            coupons.c.voided_at.is_(None),
            coupons.c.redeemed_at.is_(None),
            undelivered(decision),
        )
        .values(voided_at=sa.bindparam("now", type_=coupons.c.voided_at.type))
        .values(void_reason=void_reason(decision))
    )
    revive = (
        sa.update(coupons)
        .where(
            *conditions,
            coupons.c.voided_at.is_not(None),
            # Only voids made here: another kind of void is not undone by a message.
            coupons.c.void_reason.startswith(VOID_PREFIX, autoescape=True),
            ~undelivered(decision),
        )
        .values(voided_at=None, void_reason=None)
    )
    return void, revive


def _texts(values: Sequence[str]) -> sa.BindParameter:
    return sa.bindparam(None, list(values), type_=ARRAY(sa.Text))


def _settle_on_citus(
    connection: Connection,
    *,
    now: datetime,
    decision_ids: Sequence[int] | None,
    scope: ColumnElement[bool] | None,
) -> tuple[int, int]:
    """`settle_coupons` on a distributed store, where the outbox is a coordinator-local
    table that Citus will not join with the sharded coupons inside an UPDATE.

    The same verdicts in two steps: the coupons in question and, from the outbox alone,
    which of their decisions went undelivered and why; then one UPDATE per direction
    over the list of coupon-action keys (their idempotency keys), rechecking the
    coupon's own state.
    """
    held = sa.select(
        coupons.c.idempotency_key,
        coupons.c.voided_at,
        coupons.c.redeemed_at,
        coupons.c.void_reason,
    )
    if decision_ids is not None:
        if not decision_ids:
            return 0, 0
        keys = connection.execute(
            sa.select(outbox.c.idempotency_key).where(
                outbox.c.decision_id.in_(sorted(set(decision_ids))), outbox.c.kind == "coupon"
            )
        ).scalars()
        held = held.where(coupons.c.idempotency_key == sa.any_(_texts(sorted(set(keys)))))
    if scope is not None:
        held = held.where(scope)
    rows = connection.execute(held).all()
    if not rows:
        return 0, 0
    action = outbox.alias("coupon_action")
    failed = dict(
        connection.execute(
            sa.select(action.c.idempotency_key, void_reason(action.c.decision_id)).where(
                action.c.idempotency_key
                == sa.any_(_texts(sorted({row.idempotency_key for row in rows}))),
                undelivered(action.c.decision_id),
            )
        ).all()
    )
    to_void = sorted(
        (row.idempotency_key, failed[row.idempotency_key])
        for row in rows
        if row.voided_at is None and row.redeemed_at is None and row.idempotency_key in failed
    )
    to_revive = sorted(
        row.idempotency_key
        for row in rows
        if row.voided_at is not None
        and (row.void_reason or "").startswith(VOID_PREFIX)
        and row.idempotency_key not in failed
    )
    voided = revived = 0
    if to_void:
        voided = connection.execute(
            sa.text(
                "UPDATE coupons SET voided_at = :now, void_reason = v.reason "
                "FROM unnest(CAST(:keys AS text[]), CAST(:reasons AS text[])) v(key, reason) "
                "WHERE coupons.idempotency_key = v.key "
                "AND coupons.voided_at IS NULL AND coupons.redeemed_at IS NULL"
            ).bindparams(sa.bindparam("now", type_=coupons.c.voided_at.type)),
            {
                "now": now,
                "keys": [key for key, _ in to_void],
                "reasons": [reason for _, reason in to_void],
            },
        ).rowcount
    if to_revive:
        revived = connection.execute(
            sa.text(
                "UPDATE coupons SET voided_at = NULL, void_reason = NULL "
                "FROM unnest(CAST(:keys AS text[])) v(key) "
                "WHERE coupons.idempotency_key = v.key AND coupons.voided_at IS NOT NULL "
                "AND starts_with(coupons.void_reason, :prefix)"
            ),
            {"keys": to_revive, "prefix": VOID_PREFIX},
        ).rowcount
    return voided, revived


def settle_after_dispatch(
    store: Store, results: Sequence[tuple[Any, Any]], *, now: datetime
) -> None:
    """The dispatcher's hook: settle the decisions whose coupon, email or SMS action
    reached a final state in this batch. `results` are (PlannedAction, Outcome) pairs."""
    decision_ids = sorted(
        {
            action.decision_id
            for action, outcome in results
            if action.kind in SETTLING_KINDS and outcome.state in FINAL_STATES
        }
    )
    if not decision_ids:
        return
    with store.begin() as connection:
        settle_coupons(connection, now=now, decision_ids=decision_ids)


def undelivered_decisions(connection: Connection, decision_ids: Sequence[int]) -> dict[int, str]:
    """{decision id: void reason} for those of `decision_ids` whose messages all failed."""
    if not decision_ids:
        return {}
    decision = outbox.alias("decision_action")
    query = (
        sa.select(decision.c.decision_id, void_reason(decision.c.decision_id))
        .where(
            among(decision.c.decision_id, sorted(set(decision_ids))),
            decision.c.kind == "coupon",
            undelivered(decision.c.decision_id),
        )
        .distinct()
    )
    return dict(connection.execute(query).all())
