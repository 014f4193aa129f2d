"""What planning one rule at T decided: counts per outcome, and a few samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.store.planning import Decision, OutboxAction

decisions = Decision.__table__
outbox = OutboxAction.__table__

SAMPLE_SIZE = 3


@dataclass
class RuleOutcome:
    rule_id: str
    # done | not_due | idle (nothing new) | paused | outside_flight | already_claimed | failed
    status: str
    slot: str | None = None
    run_id: int | None = None
    planned: int = 0
    held_out: int = 0
    shadow: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    audience_removed: int = 0
    # Schedule catch-up: slots folded into this one, and slots too old to run.
    coalesced: int = 0
    missed: int = 0
    samples: list[dict] = field(default_factory=list)
    error: str | None = None
    duration_ms: int = 0

    @property
    def matched(self) -> int:
        return self.planned + self.held_out + self.shadow + sum(self.suppressed.values())

    def as_dict(self) -> dict:
        return {
            "rule": self.rule_id,
            "status": self.status,
            "slot": self.slot,
            "matched": self.matched,
            "planned": self.planned,
            "held_out": self.held_out,
            "shadow": self.shadow,
            "suppressed": dict(sorted(self.suppressed.items())),
            "variants": dict(sorted(self.variants.items())),
            "actions": dict(sorted(self.actions.items())),
            "audience_removed": self.audience_removed,
            "coalesced": self.coalesced,
            "missed": self.missed,
            "samples": self.samples,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


def collect_samples(connection: Connection, run_id: int) -> list[dict]:
    """A few users per outcome with their actions, for dry-run output."""
    chosen: list[tuple] = []
    for kind in ("planned", "held_out", "shadow", "suppressed"):
        rows = connection.execute(
            sa.select(decisions.c.id, decisions.c.user_id, decisions.c.variant, decisions.c.reason)
            .where(decisions.c.run_id == run_id, decisions.c.outcome == kind)
            .order_by(decisions.c.user_id)
            .limit(SAMPLE_SIZE)
        ).all()
        chosen += [(kind, *row) for row in rows]
    # The actions of all the samples in one round trip.
    actions: dict[int, list[dict]] = {decision_id: [] for _, decision_id, *_ in chosen}
    if actions:
        rows = connection.execute(
            sa.select(outbox.c.decision_id, outbox.c.kind, outbox.c.payload)
            .where(outbox.c.decision_id.in_(list(actions)))
            .order_by(outbox.c.id)
        ).all()
        for decision_id, kind, payload in rows:
            actions[decision_id].append({"kind": kind, "params": payload["params"]})
    return [
        {
            "user": user_id,
            "outcome": kind,
            "reason": reason,
            "variant": variant,
            "actions": actions[decision_id],
        }
        for kind, decision_id, user_id, variant, reason in chosen
    ]
