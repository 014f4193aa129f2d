"""The candidate query of one rule: occurrences -> conditions (`when`) -> not already
decided -> `unless` -> consent -> re-eligibility (`every`) -> exclusive group -> per-rule
caps -> holdout -> variant, each a column of one SQL query, never a Python loop over
users. Each check is evaluated once per row, into `reason`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa

from engine.consent import channel_consent_sql
from engine.planning.assignment import bucket_sql, holdout_basis_points, variant_sql
from engine.planning.sources import ConditionCompiler, Sources
from engine.planning.spec import PlanSpec
from engine.store.people import User
from engine.store.planning import Decision

users = User.__table__
decisions = Decision.__table__
# Built once, not per statement: a table's alias builds a proxy of every column the
# first time its columns are read, which the daemon's idle tick paid for each rule.
_DONE = decisions.alias("done")


def candidates(
    spec: PlanSpec,
    sources: Sources,
    occ: sa.FromClause,
    compile_conditions: ConditionCompiler,
    superiors: Sequence[str],
    user_id: str | None,
    salt: str,
    dialect: str,
) -> sa.Select:
    """The candidate rows of `spec` at T: each occurrence of `occ` (OCCURRENCE_COLUMNS)
    that meets the conditions and is not decided yet, with its reason, holdout and
    variant bucket: what the scratch table holds."""
    sources = replace(sources, trigger_at=occ.c.trigger_at)
    u, p, ev = sources.users, sources.profiles, sources.event
    joined = occ.join(u, u.c.id == occ.c.user_id).outerjoin(p, p.c.user_id == u.c.id)
    if ev is not None:
        # On the user too: events are distributed by user (docs/scaling.md).
        joined = joined.join(ev, sa.and_(ev.c.id == occ.c.event_id, ev.c.user_id == occ.c.user_id))
    key = sa.literal("once", sa.String) if spec.once_per_user else occ.c.occurrence_key
    ref = sa.literal("once", sa.String) if spec.once_per_user else occ.c.occurrence_ref
    # `unless` is a list of exit conditions: any one of them holding stops the user.
    unless = sa.or_(sa.false(), *(compile_conditions([e], sources) for e in spec.unless))
    unless_hit = sa.case((unless, 1), else_=0)
    filters = [not_decided(spec, occ.c.user_id, key)]
    if spec.when:
        filters.append(compile_conditions(spec.when, sources))
    if user_id is not None:
        filters.append(occ.c.user_id == user_id)
    columns = [
        occ.c.user_id,
        key.label("occurrence_key"),
        occ.c.occurred_at,
        occ.c.trigger_at,
        occ.c.event_id,
        ref.label("occurrence_ref"),
        unless_hit.label("unless_hit"),
    ]
    ranked = ranks_occurrences(spec)
    if ranked and spec.once_per_user:
        # One decision per user and run: the oldest occurrence the `unless` did not
        # stop stands for the run (or, when all were stopped, the oldest).
        rank = sa.func.row_number().over(
            partition_by=occ.c.user_id,
            order_by=(unless_hit, occ.c.occurred_at, occ.c.occurrence_key),
        )
    elif ranked:
        # Several occurrences of one user in one run (two visits in one tick): `every`
        # and caps must hold within the run too, so they are ranked, oldest first,
        # among those the `unless` did not stop (a stopped one uses up nothing).
        rank = sa.func.row_number().over(
            partition_by=(occ.c.user_id, unless_hit),
            order_by=(occ.c.occurred_at, occ.c.occurrence_key),
        )
    else:
        rank = sa.literal(1, sa.Integer)
    columns.append(rank.label("user_rank"))
    matched = sa.select(*columns).select_from(joined).where(*filters).subquery("matched")
    if ranked and spec.once_per_user:
        matched = sa.select(matched).where(matched.c.user_rank == 1).subquery("first_matched")
    return decide(spec, matched, sources.at, superiors, salt, dialect)


def ranks_occurrences(spec: PlanSpec) -> bool:
    """Whether one user can have several occurrences in a run that must be ranked.

    Stage and schedule triggers give one occurrence per user per run; only event and
    after triggers can give several, and only `once`, `every` and caps care. Every
    other rule is spared a sort of its whole audience.
    """
    if spec.trigger.kind not in ("event", "after"):
        return False
    return spec.once_per_user or spec.every is not None or spec.cap_max is not None


def not_decided(spec: PlanSpec, user_id, key) -> sa.ColumnElement[bool]:
    """No final decision yet for (rule, user, occurrence)."""
    d = _DONE
    return ~sa.exists().where(
        d.c.rule_id == spec.rule_id,
        d.c.user_id == user_id,
        d.c.occurrence_key == key,
        is_final(d, spec),
    )


def is_final(d: sa.FromClause, spec: PlanSpec) -> sa.ColumnElement[bool]:
    """Whether a decision row of `spec`'s rule decided its occurrence for good.

    Final: planned and held out; suppressed by `unless` (once stopped, stopped: a
    follow-up whose exit condition held is never sent later for that occurrence,
    DESIGN invariant 7); and shadow outcomes while the rule is in shadow. Other
    suppressions (no consent, capped...) may turn into a plan later, and shadow
    outcomes are decided for real when the rule goes live.
    """
    final = [d.c.outcome.in_(("planned", "held_out"))]
    if not spec.once_per_user:
        # `once: per_user` keys every occurrence as "once": a stop there is about one
        # occurrence only, and the user's next occurrence may still qualify.
        final.append(sa.and_(d.c.outcome == "suppressed", d.c.reason == "unless"))
    if spec.status == "shadow":
        final.append(d.c.outcome == "shadow")
    return sa.or_(*final)


def decide(spec: PlanSpec, matched, at: datetime, superiors, salt: str, dialect: str):
    u = users.alias("u")
    d = decisions.alias("prior")
    first_in_run = matched.c.user_rank == 1
    checks: list[tuple[sa.ColumnElement[bool], str]] = [(matched.c.unless_hit == 1, "unless")]
    if spec.contact_channels:
        reachable = sa.or_(*(channel_consent_sql(u, c) for c in spec.contact_channels))
        checks.append((~reachable, "no_consent"))
    # Held-out decisions count as received for `every` and caps: the control group must
    # be decided as often as the treated one, or it piles up extra decisions that
    # dilute its conversion rate.
    planned_by = [d.c.user_id == matched.c.user_id, d.c.outcome.in_(("planned", "held_out"))]
    if spec.every is not None:
        recent = sa.exists().where(
            *planned_by, d.c.rule_id == spec.rule_id, d.c.decided_at > at - spec.every
        )
        checks.append((sa.or_(recent, ~first_in_run), "recently_received"))
    if superiors:
        # A user held out of a higher-priority rule of the group is its control group:
        # giving them a lower rule's offer instead would bias every lift figure.
        won = sa.exists().where(
            d.c.user_id == matched.c.user_id,
            d.c.outcome.in_(("planned", "held_out")),
            d.c.rule_id.in_(superiors),
            d.c.decided_at == at,
        )
        checks.append((won, "exclusive_group"))
    if spec.cap_max is not None and spec.cap_per is not None:
        used = (
            sa.select(sa.func.count())
            .where(*planned_by, d.c.rule_id == spec.rule_id, d.c.decided_at > at - spec.cap_per)
            .scalar_subquery()
        )
        # The rank counts this run's earlier occurrences of the same user.
        checks.append((used + matched.c.user_rank > spec.cap_max, "capped"))

    def bucket(purpose: str) -> sa.ColumnElement[int]:
        return bucket_sql(matched.c.user_id, spec.rule_id, salt, purpose, dialect)

    held_out = sa.false()
    if spec.holdout > 0:
        held_out = bucket("holdout") < holdout_basis_points(spec.holdout)
    variant = variant_sql(bucket("variant"), spec.variants)
    # Each check is evaluated once, into `reason`; outcome and the treated variant are
    # derived from the stored columns afterwards (scratch.settled), so no correlated
    # subquery runs more than once per row.
    reason = sa.case(
        *((condition, sa.literal(name)) for condition, name in checks),
        else_=sa.null(),
    )
    return sa.select(
        matched.c.user_id,
        matched.c.occurrence_key,
        matched.c.occurred_at,
        matched.c.trigger_at,
        matched.c.event_id,
        sa.func.md5(matched.c.occurrence_ref).label("occurrence_ref"),
        sa.null().label("outcome"),
        reason.label("reason"),
        variant.label("variant"),
        held_out.label("held_out"),
    ).select_from(matched.join(u, u.c.id == matched.c.user_id))
