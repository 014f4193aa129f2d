"""`tag`: add or remove user tags (usable by later rules through `has_tag`).

```yaml
actions:
  tag: {add: [winback-2026], remove: [active]}
```
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, model_validator

from engine.action_kinds import ActionKind, ActionParams

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


class TagParams(ActionParams):
    add: list[Tag] | None = None
    """Tags to add (already present: no change)."""
    remove: list[Tag] | None = None
    """Tags to remove (absent: no change)."""

    @model_validator(mode="after")
    def _something_to_do(self) -> TagParams:
        if not self.add and not self.remove:
            raise ValueError("give at least one tag in 'add' or 'remove'")
        both = set(self.add or ()) & set(self.remove or ())
        if both:
            raise ValueError(f"tags both added and removed: {', '.join(sorted(both))}")
        return self


def deliver(ctx, actions):
    """Add and remove the tags of the whole batch in one transaction (idempotent)."""
    import sqlalchemy as sa

    from engine.actions.delivering import in_order, parse_params
    from engine.delivery.context import Outcome
    from engine.store.people import UserTag
    from engine.store.sql import dialect_insert

    tags = UserTag.__table__
    good, bad = parse_params(actions, TagParams)
    adds = [{"user_id": a.user_id, "tag": t} for a, p in good for t in p.add or ()]
    removes = [{"b_user": a.user_id, "b_tag": t} for a, p in good for t in p.remove or ()]
    with ctx.store.begin() as connection:
        if adds:
            connection.execute(dialect_insert(connection, tags).on_conflict_do_nothing(), adds)
        if removes:
            statement = sa.delete(tags).where(
                tags.c.user_id == sa.bindparam("b_user"), tags.c.tag == sa.bindparam("b_tag")
            )
            connection.execute(statement, removes)
    return in_order(actions, bad, {action.id: Outcome.sent() for action, _ in good})


KIND = ActionKind(
    name="tag",
    channel="tag",
    params=TagParams,
    description="Add or remove tags on the user.",
    example={"add": ["winback-2026"], "remove": ["active"]},
    deliver=deliver,
)
