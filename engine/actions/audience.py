"""`audience`: add the user to a retargeting-ad audience.

```yaml
actions:
  audience: {name: lapsed-high-value, platforms: [google, meta]}
```
Members need ads consent; they leave the audience when they withdraw it, unsubscribe
or no longer qualify, and `nudge audiences sync NAME` turns that into adds/removes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.action_kinds import ActionKind, ActionParams, Slug

Platform = Literal["google", "meta", "csv"]


class AudienceParams(ActionParams):
    name: Slug
    """The audience, shared by every rule that names it."""
    platforms: list[Platform] | None = Field(default=None, min_length=1)
    """Where it is exported; default: every platform configured in nudge.toml."""


def deliver(ctx, actions):
    """Make each user an active member of the audience (re-adding clears a removal)."""
    import sqlalchemy as sa

    from engine.actions.delivering import in_order, parse_params
    from engine.delivery.context import Outcome
    from engine.store.delivery import AudienceMember
    from engine.store.sql import dialect_insert

    members = AudienceMember.__table__
    good, bad = parse_params(actions, AudienceParams)
    rows = {
        (p.name, a.user_id): {
            "audience": p.name,
            "user_id": a.user_id,
            "rule_id": a.rule_id,
            "added_at": ctx.now,
            "removed_at": None,
            "removed_reason": None,
        }
        for a, p in good
    }
    if rows:
        with ctx.store.begin() as connection:
            statement = dialect_insert(connection, members)
            statement = statement.on_conflict_do_update(
                index_elements=[members.c.audience, members.c.user_id],
                set_={
                    # An active member keeps its first added_at; a returning one restarts.
                    "added_at": sa.case(
                        (members.c.removed_at.is_(None), members.c.added_at),
                        else_=statement.excluded.added_at,
                    ),
                    "rule_id": statement.excluded.rule_id,
                    "removed_at": None,
                    "removed_reason": None,
                },
            )
            connection.execute(statement, list(rows.values()))
    return in_order(actions, bad, {action.id: Outcome.sent() for action, _ in good})


KIND = ActionKind(
    name="audience",
    channel="audience",
    consent="ads",
    params=AudienceParams,
    description="Add the user to a retargeting audience exported to ad platforms.",
    example={"name": "lapsed-high-value", "platforms": ["google", "meta"]},
    deliver=deliver,
)
