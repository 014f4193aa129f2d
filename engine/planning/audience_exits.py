"""Retargeting audiences follow the rule: a member who no longer qualifies leaves.

An `audience` action adds a user when it is delivered; on every evaluation of the
rule, its members who no longer match (left the trigger stage, or fail `when`) are
marked removed, so the next sync sends a remove to the ad platforms. Consent
withdrawal and unsubscribes are handled by engine.audiences.members at sync time.
Event-triggered rules are skipped: their conditions may read the triggering event,
which membership does not remember; so are rules whose conditions use
`since="trigger"`, for the same reason.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.conditions.functions import TriggerWindowUnavailable
from engine.planning.spec import PlanSpec
from engine.store.delivery import AudienceMember

members = AudienceMember.__table__


def remove_unqualified(
    connection: Connection, spec: PlanSpec, sources, compile_conditions, at: datetime
) -> int:
    leaving = _unqualified(spec, sources, compile_conditions)
    if leaving is None:
        return 0
    return connection.execute(
        members.update().where(leaving).values(removed_at=at, removed_reason="no_longer_qualifies")
    ).rowcount


def any_unqualified(connection: Connection, spec: PlanSpec, sources, compile_conditions) -> bool:
    """Whether `remove_unqualified` would remove anyone (a read: a steady tick's check)."""
    leaving = _unqualified(spec, sources, compile_conditions)
    if leaving is None:
        return False
    query = sa.select(members.c.user_id).where(leaving)
    return bool(connection.execute(sa.select(sa.exists(query))).scalar())


def _unqualified(spec: PlanSpec, sources, compile_conditions) -> sa.ColumnElement[bool] | None:
    """Which audience members of this rule no longer qualify; None when none can leave."""
    audiences = sorted(
        {
            str(action.params["name"])
            for plans in spec.actions.values()
            for action in plans
            if action.kind == "audience" and action.params.get("name")
        }
    )
    if not audiences or spec.event_trigger:
        return None
    u, p = sources.users, sources.profiles
    try:
        qualifies = [compile_conditions(spec.when, sources)] if spec.when else []
    except TriggerWindowUnavailable:
        # `since="trigger"` reads the occurrence a member was added for, which the
        # membership does not remember: such a rule's members stay until withdrawn.
        return None
    if spec.trigger.kind == "stage":
        qualifies.append(sources.stage == spec.trigger.value)
    if not qualifies:
        return None
    qualified = (
        sa.select(u.c.id)
        .select_from(u.outerjoin(p, p.c.user_id == u.c.id))
        .where(u.c.id == members.c.user_id, *qualifies)
    )
    return sa.and_(
        members.c.rule_id == spec.rule_id,
        members.c.audience.in_(audiences),
        members.c.removed_at.is_(None),
        ~sa.exists(qualified),
    )
