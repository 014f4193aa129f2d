"""The planner's temporary tables, private to the connection.

`nudge_plan_scratch` holds one rule's candidates at T (engine.planning.candidates);
counts, decisions and outbox rows are all read from it, in the caller's transaction.
`nudge_plan_occurrences` holds a follow-up rule's occurrences, made before the
candidate query reads them (see `materialize_occurrences`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.planning.outcome import RuleOutcome
from engine.planning.spec import PlanSpec
from engine.planning.statistics import analyze_scratch
from engine.store.types import UTCDateTime


def settled(scratch: sa.Table, spec: PlanSpec) -> tuple[sa.ColumnElement, sa.ColumnElement]:
    """(outcome, variant) of a scratch row, from its reason and holdout.

    Only treated users keep a variant: the control group and the suppressed are
    compared against all variants together. Derived where read (the counts and the
    decisions) instead of written back: an UPDATE of every candidate row cost as much
    as the decisions' INSERT.
    """
    success = "planned" if spec.status == "active" else "shadow"
    treated = sa.and_(scratch.c.reason.is_(None), scratch.c.held_out.is_(False))
    outcome = sa.case(
        (scratch.c.reason.is_not(None), sa.literal("suppressed")),
        (scratch.c.held_out.is_(True), sa.literal("held_out")),
        else_=sa.literal(success),
    )
    variant = sa.case((treated, scratch.c.variant), else_=sa.null())
    return outcome, variant


# One definition with a fixed name (temporary tables are private to a connection): a
# random name per run made every statement touching it a new one to compile, which was
# most of an idle tick.
def _occurrence_columns(ref_type: sa.types.TypeEngine) -> list[sa.Column]:
    """The occurrence columns every trigger kind selects (engine.triggers.base)."""
    return [
        sa.Column("user_id", sa.String(128)),
        sa.Column("occurrence_key", sa.String(128)),
        sa.Column("occurred_at", UTCDateTime),
        sa.Column("trigger_at", UTCDateTime),
        sa.Column("event_id", sa.BigInteger),
        sa.Column("occurrence_ref", ref_type),
    ]


_SCRATCH = sa.Table(
    "nudge_plan_scratch",
    sa.MetaData(),
    # The candidates' reference is already its md5 (candidates.py): 32 characters.
    *_occurrence_columns(sa.String(32)),
    sa.Column("outcome", sa.String(16)),
    sa.Column("reason", sa.String(64)),
    sa.Column("variant", sa.String(64)),
    sa.Column("held_out", sa.Boolean),
    prefixes=["TEMPORARY"],
)


def scratch_table(connection: Connection) -> sa.Table:
    _drop(connection, _SCRATCH)
    _SCRATCH.create(connection)
    return _SCRATCH


def count_outcomes(connection, scratch, spec: PlanSpec, outcome: RuleOutcome) -> None:
    kind, variant = settled(scratch, spec)
    # Labels unlike any scratch column: a GROUP BY name means the input column first.
    kind, variant = kind.label("settled_outcome"), variant.label("settled_variant")
    rows = connection.execute(
        sa.select(kind, scratch.c.reason, variant, sa.func.count()).group_by(
            kind, scratch.c.reason, variant
        )
    ).all()
    for kind, reason, variant, count in rows:
        if kind == "suppressed":
            outcome.suppressed[reason] = outcome.suppressed.get(reason, 0) + count
            continue
        if kind == "planned":
            outcome.planned += count
        elif kind == "held_out":
            outcome.held_out += count
        elif kind == "shadow":
            outcome.shadow += count
        if variant is not None and kind != "held_out":
            outcome.variants[variant] = outcome.variants.get(variant, 0) + count


# A trigger's occurrences as it selects them, its reference still in full.
_OCCURRENCES = sa.Table(
    "nudge_plan_occurrences",
    sa.MetaData(),
    *_occurrence_columns(sa.Text()),
    prefixes=["TEMPORARY"],
)


def materialize_occurrences(connection: Connection, occurrences: sa.Select) -> sa.Table:
    """`occurrences` written into a temporary table, analysed: the candidate query then
    joins a set whose size and users the planner knows.

    For follow-ups (`after:`): their occurrences are decisions and outbox rows the
    followed rule wrote moments ago, in this very evaluation, which the statistics of
    those tables cannot know about. Selected alone, through the followed rule's
    decisions, they cost what the hand-written query costs; joined with users,
    profiles and the conditions in one statement planned from those statistics, they
    were driven from a scan of every user.
    """
    _drop(connection, _OCCURRENCES)
    _OCCURRENCES.create(connection)
    names = [column.name for column in _OCCURRENCES.c]
    connection.execute(_OCCURRENCES.insert().from_select(names, occurrences))
    analyze_scratch(connection, _OCCURRENCES)
    return _OCCURRENCES


def drop_occurrences(connection: Connection) -> None:
    _drop(connection, _OCCURRENCES)


def _drop(connection: Connection, table: sa.Table) -> None:
    # IF EXISTS in the statement: `checkfirst` costs a catalog query first, per rule.
    connection.execute(sa.schema.DropTable(table, if_exists=True))
