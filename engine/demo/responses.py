"""The shoppers' answer to the demo's tick: purchases after the rules' messages, with a
real effect for one rule and none for another, so `nudge report` has lift to measure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine.clock import ensure_aware
from engine.demo.shop import DAY, DEMO_FOLDER, ShopStory


@dataclass(frozen=True)
class Response:
    """How shoppers answer one rule: the chance that a user buys within RESPONSE_PERIOD
    of the rule's message (treated) or of the decision (held out: the control group's
    exposure, as attribution measures it), and the share of treated buyers who pay with
    the rule's coupon code."""

    treated: float
    control: float
    coupon_use: float = 0.0


RESPONSES = {
    # The thank-you coupon brings first-time buyers back: a real effect.
    "first-purchase-thank-you": Response(treated=0.25, control=0.08, coupon_use=0.6),
    # Lapsed members come back as often whether won back or not: no effect.
    "winback-lapsed-members": Response(treated=0.20, control=0.20, coupon_use=0.5),
}
RESPONSE_PERIOD = timedelta(days=5)  # within every rule's attribution window (7d)
RESPONSE_LOOKBACK = timedelta(days=30)  # decisions exposed this long before now are answered
RESPONSES_FILE = "responses.jsonl"


@dataclass
class ResponseCounts:
    """One group of one rule: decisions answered, users who bought, buyers with the code."""

    decisions: int = 0
    buyers: int = 0
    with_code: int = 0

    @property
    def rate(self) -> float | None:
        return self.buyers / self.decisions if self.decisions else None


@dataclass
class ResponsesResult:
    """What `simulate_responses` did, per rule and group (treated, control)."""

    now: datetime
    path: Path
    rules: dict[str, dict[str, ResponseCounts]]
    too_recent: int  # decisions of the RESPONSES rules not exposed RESPONSE_PERIOD before now
    ingest: Any  # engine.ingest.IngestReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "file": str(self.path),
            "rules": {
                rule: {group: vars(counts).copy() for group, counts in groups.items()}
                for rule, groups in self.rules.items()
            },
            "too_recent": self.too_recent,
            "ingest": self.ingest.as_dict(),
        }


def simulate_responses(store, settings=None, *, now: datetime, seed: int = 7) -> ResponsesResult:
    """The shoppers' answer to the demo's tick, as purchases through the ingest path.

    For each decision of a RESPONSES rule that was exposed (treated: its first action
    sent; control: decided, engine/measurement/attribution.py) between RESPONSE_LOOKBACK
    and RESPONSE_PERIOD before `now`, the user buys with the group's chance within
    RESPONSE_PERIOD of the exposure, a visit a few minutes before; some treated buyers
    pay with the decision's coupon code (redeemed by ingest). Each decision's draws come
    from its own generator seeded with (seed, rule, user): the same answers whatever the
    database or the order. Writes demo-data/responses.jsonl streaming, then ingests it
    at `now`; running it again stores nothing twice (stable event ids).
    """
    import sqlalchemy as sa

    from engine.ingest import ingest_files
    from engine.measurement.attribution import Windows, exposures, sql_instant
    from engine.store.delivery import Coupon
    from engine.store.planning import Decision, OutboxAction

    settings = settings or store.settings
    now = ensure_aware(now)
    cutoff = now - RESPONSE_PERIOD
    exposed = exposures(until=now, not_before=now - RESPONSE_LOOKBACK, windows=Windows({}))
    outbox, coupons = OutboxAction.__table__, Coupon.__table__
    coupon_action = (
        sa.select(outbox.c.decision_id, coupons.c.code, coupons.c.min_order)
        .join(coupons, coupons.c.idempotency_key == outbox.c.idempotency_key)
        .where(outbox.c.channel == "coupon", coupons.c.voided_at.is_(None))
        .subquery("coupon_action")
    )
    rules = sorted(RESPONSES)
    answered = (
        sa.select(
            exposed.c.decision_id,
            exposed.c.rule_id,
            exposed.c.user_id,
            exposed.c.outcome,
            exposed.c.exposure_at,
            coupon_action.c.code,
            coupon_action.c.min_order,
        )
        .select_from(
            exposed.outerjoin(coupon_action, coupon_action.c.decision_id == exposed.c.decision_id)
        )
        .where(exposed.c.rule_id.in_(rules), exposed.c.exposure_at <= sql_instant(cutoff))
    )
    decisions = Decision.__table__
    waiting = sa.select(sa.func.count()).where(
        decisions.c.rule_id.in_(rules),
        decisions.c.outcome.in_(("planned", "held_out")),
        decisions.c.decided_at >= sql_instant(now - RESPONSE_LOOKBACK),
        decisions.c.decided_at <= sql_instant(now),
        decisions.c.id.not_in(answered.with_only_columns(exposed.c.decision_id)),
    )
    query = answered.order_by(exposed.c.rule_id, exposed.c.user_id, exposed.c.decision_id)
    story = ShopStory(seed, now, settings.tz)
    counts = {rule: {"treated": ResponseCounts(), "control": ResponseCounts()} for rule in rules}
    folder = settings.project_dir / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESPONSES_FILE
    with store.read() as connection, path.open("w", encoding="utf-8") as out:
        too_recent = connection.execute(waiting).scalar_one()
        rows = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
        for row in rows.mappings():
            group = "treated" if row["outcome"] == "planned" else "control"
            tally = counts[row["rule_id"]][group]
            tally.decisions += 1
            events = _response(story, row, RESPONSES[row["rule_id"]], group, seed)
            if not events:
                continue
            tally.buyers += 1
            tally.with_code += any("coupon_code" in event for event in events)
            for event in events:
                out.write(story.serialise(event) + "\n")
    report = ingest_files(
        store,
        [path],
        now=now,
        kind="events",
        rejects_path=path.with_name(path.name + ".rejects.jsonl"),
    )
    return ResponsesResult(now=now, path=path, rules=counts, too_recent=too_recent, ingest=report)


def _response(story: ShopStory, row, response: Response, group: str, seed: int) -> list[dict]:
    """The events of one decision's user: none, or a visit and a purchase (with the
    coupon code and its coupon_redeemed event when they use it)."""
    user, decision = row["user_id"], row["decision_id"]
    rng = random.Random(f"{seed}:{row['rule_id']}:{user}")
    # Every draw is made whatever the outcome, so each decision's answer stands alone.
    buys = rng.random() < (response.treated if group == "treated" else response.control)
    delay = min(rng.expovariate(1 / 1.5), 4.9) * DAY + timedelta(minutes=rng.uniform(10, 60))
    amount = round(rng.lognormvariate(5.3, 0.6)) + 0.9
    uses_code = rng.random() < response.coupon_use
    items = rng.choice((1, 1, 1, 2, 2, 3))
    browse = timedelta(minutes=rng.uniform(3, 30))
    if not buys:
        return []
    at = ensure_aware(row["exposure_at"]) + delay
    code = row["code"] if group == "treated" and uses_code else None
    if code and row["min_order"] is not None:
        amount = max(amount, float(row["min_order"]) + 0.9)
    prefix = f"{user}-r{decision}"
    purchase = {
        "event_id": f"{prefix}-2",
        "user": user,
        "type": "purchase",
        "at": at,
        "amount": f"{amount:.2f}",
        "currency": "CNY",
        "order_id": f"o{user[1:]}-r{decision}",
        "properties": {"items": items},
    }
    visit = {"event_id": f"{prefix}-1", "user": user, "type": "visit", "at": at - browse}
    events = [visit, purchase]
    if code:
        purchase["coupon_code"] = code
        redeemed = {"event_id": f"{prefix}-3", "user": user, "type": "coupon_redeemed"}
        events.append(redeemed | {"at": at, "coupon_code": code})
    return events
