"""One pass over the outbox: claim a batch, apply policies, deliver, record.

    report = dispatch_once(store, now=now, worker_id="host-1", channels=build_channels(s))

The claim and the record are two short transactions; delivery happens between them,
outside any transaction, so a slow SMTP server never holds database locks. If the
process dies in between, the rows stay claimed until their lease ends and another
dispatcher takes them over; channels receive the idempotency key so that a sink can
drop the resulting duplicate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.actions import ACTION_KINDS
from engine.clock import ensure_aware
from engine.coupons.void import settle_after_dispatch
from engine.delivery.backoff import retry_delay
from engine.delivery.channels import ChannelSet
from engine.delivery.claims import claim_batch, record_outcomes
from engine.delivery.config import DeliveryConfig, delivery_config
from engine.delivery.context import Contact, DeliveryContext, Outcome, PlannedAction
from engine.delivery.policy import DeliveryPolicy, default_policies
from engine.durations import parse_duration
from engine.store import Store
from engine.store.people import User

users = User.__table__


@dataclass
class DispatchReport:
    """What one pass did: claimed rows and final counts per outcome and skip reason."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: DispatchReport) -> None:
        self.claimed += other.claimed
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, object]:
        return {
            "claimed": self.claimed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "reasons": dict(sorted(self.reasons.items())),
        }


def load_contacts(store: Store, user_ids: Sequence[str]) -> dict[str, Contact]:
    """The users of one batch, in one query."""
    if not user_ids:
        return {}
    columns = [users.c[name] for name in Contact.__dataclass_fields__]
    query = sa.select(*columns).where(users.c.id.in_(sorted(set(user_ids))))
    with store.connect() as connection:
        return {row.id: Contact(**row._mapping) for row in connection.execute(query)}


def finalise(outcome: Outcome, action: PlannedAction, config: DeliveryConfig, now: datetime):
    """Turn a retry into a scheduled retry, or into dead once attempts are used up."""
    if outcome.state == "deferred" and (outcome.until is None or outcome.until <= now):
        # Never due again at the same `now`: dispatch_until_idle must terminate.
        return Outcome.deferred(now + timedelta(minutes=1), outcome.reason or "deferred")
    if outcome.state != "retry":
        return outcome
    if action.attempts >= config.retry.max_attempts:
        return Outcome.dead("max_attempts", outcome.error or "failed")
    delay = retry_delay(
        action.idempotency_key,
        action.attempts,
        base=parse_duration(config.retry.base),
        max_delay=parse_duration(config.retry.max_delay),
    )
    return Outcome("retry", reason="retrying", error=outcome.error, until=now + delay)


def deliver_batch(ctx: DeliveryContext, actions: list[PlannedAction]) -> list[Outcome]:
    """Run each kind's deliver hook over its actions; one Outcome per action, in order."""
    outcomes: dict[int, Outcome] = {}
    by_kind: dict[str, list[PlannedAction]] = {}
    for action in actions:
        by_kind.setdefault(action.kind, []).append(action)
    for kind_name, group in by_kind.items():
        kind = ACTION_KINDS.get(kind_name)
        if kind is None or kind.deliver is None:
            for action in group:
                outcomes[action.id] = Outcome.dead(
                    "unknown_kind", f"no deliverable action kind {kind_name!r} is registered"
                )
            continue
        try:
            results = kind.deliver(ctx, group)
        except Exception as exc:  # noqa: BLE001 - one broken kind must not stop the others
            results = [Outcome.retry(f"{type(exc).__name__}: {exc}")] * len(group)
        for action, outcome in zip(group, results, strict=True):
            outcomes[action.id] = outcome
    return [outcomes[action.id] for action in actions]


def dispatch_once(
    store: Store,
    *,
    now: datetime,
    worker_id: str,
    channels: ChannelSet,
    batch_size: int | None = None,
    policies: list[DeliveryPolicy] | None = None,
    config: DeliveryConfig | None = None,
) -> DispatchReport:
    """Claim one batch of due actions and deliver it; returns what happened."""
    ensure_aware(now)
    config = config or delivery_config(store.settings)
    policies = default_policies() if policies is None else policies
    limit = batch_size or config.batch_size
    with store.begin() as connection:
        actions = claim_batch(
            connection,
            now=now,
            worker_id=worker_id,
            lease_until=now + config.lease_duration,
            limit=limit,
        )
    report = DispatchReport(claimed=len(actions))
    if not actions:
        return report
    ctx = DeliveryContext(
        store=store,
        settings=store.settings,
        config=config,
        channels=channels,
        now=now,
        worker_id=worker_id,
        contacts=load_contacts(store, [a.user_id for a in actions]),
    )
    for policy in policies:
        policy.before_batch(ctx, actions)
    decided: dict[int, Outcome] = {}
    passing: list[PlannedAction] = []
    for action in actions:  # priority order: caps give their slots to the first
        verdict = next((o for p in policies if (o := p.check(ctx, action)) is not None), None)
        if verdict is None:
            passing.append(action)
        else:
            decided[action.id] = verdict
    for action, outcome in zip(passing, deliver_batch(ctx, passing), strict=True):
        decided[action.id] = outcome
    results = [(a, finalise(decided[a.id], a, config, now)) for a in actions]
    with store.begin() as connection:
        record_outcomes(connection, results, now=now, worker_id=worker_id)
    # A coupon whose email/SMS was skipped or went dead is voided; after the commit
    # above, not inside it, so concurrent dispatchers cannot both miss it (see
    # engine/coupons/void.py).
    settle_after_dispatch(store, results, now=now)
    for _action, outcome in results:
        report.outcomes[outcome.state] += 1
        if outcome.reason and outcome.state in ("skipped", "deferred", "dead"):
            report.reasons[outcome.reason] += 1
    return report


def dispatch_until_idle(
    store: Store,
    *,
    now: datetime,
    worker_id: str,
    channels: ChannelSet,
    batch_size: int | None = None,
    max_batches: int = 1_000_000,
    config: DeliveryConfig | None = None,
) -> DispatchReport:
    """Repeat dispatch_once at the same `now` until nothing is due (what `--once` does).

    Retries and deferrals are scheduled after `now`, so this always terminates.
    """
    total = DispatchReport()
    for _ in range(max_batches):
        report = dispatch_once(
            store,
            now=now,
            worker_id=worker_id,
            channels=channels,
            batch_size=batch_size,
            config=config,
        )
        total.add(report)
        if report.claimed == 0:
            break
    return total
