"""The writes of planning one rule: its decisions (an upsert from the scratch table)
and one outbox row per planned action, each with its idempotency key and payload.

At most once (invariant 1) is the decisions table's unique (rule, user, occurrence):
a decision that planned or held out is final; a suppressed one may later turn into
a plan (the user consented, a cap expired) through the upsert below, and nothing else
ever rewrites it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from engine.consent import channel_consent_sql
from engine.planning.scratch import settled
from engine.planning.spec import PlanSpec
from engine.store.people import User
from engine.store.planning import Decision, Installation, OutboxAction
from engine.store.sql import dialect_insert
from engine.store.types import JsonDocument, UTCDateTime

users = User.__table__
decisions = Decision.__table__
outbox = OutboxAction.__table__
installation = Installation.__table__


def record_decisions(connection, scratch, spec: PlanSpec, run_id: int, at: datetime) -> None:
    outcome, variant = settled(scratch, spec)
    columns = ["run_id", "rule_id", "user_id", "occurrence_key", "outcome", "reason"]
    columns += ["variant", "decided_at", "occurred_at", "trigger_at", "event_id", "occurrence_ref"]
    source = sa.select(
        sa.literal(run_id, sa.BigInteger),
        sa.literal(spec.rule_id, sa.String),
        scratch.c.user_id,
        scratch.c.occurrence_key,
        outcome,
        scratch.c.reason,
        variant,
        sa.literal(at, UTCDateTime),
        # Follow-ups wait from it through an index (migration 0007): never NULL, the
        # decision instant when a trigger (a plugin's, say) gives none.
        sa.func.coalesce(scratch.c.occurred_at, sa.literal(at, UTCDateTime)),
        scratch.c.trigger_at,
        scratch.c.event_id,
        scratch.c.occurrence_ref,
    ).where(sa.true())  # SQLite's upsert-after-SELECT parsing ambiguity
    statement = dialect_insert(connection, decisions).from_select(columns, source)
    prior, new = decisions.c, statement.excluded
    # What may be decided again (see candidates.not_decided): a suppression other than
    # `unless` turns into a plan, or into an `unless` stop, which is final; a shadow
    # outcome turns into whatever the live rule decides. Nothing else is ever rewritten.
    # The constants are written into the statement: Citus sends the ON CONFLICT
    # clause to the shards without its parameters' types ("could not determine data
    # type of parameter $1").
    suppressed, unless = constant("suppressed"), constant("unless")
    shadow = constant("shadow")
    revisable = sa.or_(
        sa.and_(
            prior.outcome == suppressed,
            sa.or_(
                sa.func.coalesce(prior.reason, constant("")) != unless,
                prior.occurrence_key == constant("once"),
            ),
            sa.or_(new.outcome != suppressed, new.reason == unless),
        ),
        sa.and_(prior.outcome == shadow, new.outcome != shadow),
    )
    statement = statement.on_conflict_do_update(
        index_elements=["rule_id", "user_id", "occurrence_key"],
        set_={name: new[name] for name in columns if name not in ("rule_id", "user_id")},
        where=revisable,
    )
    connection.execute(statement)


def constant(value: str) -> sa.ColumnElement[str]:
    """A string written into the statement as a typed literal, not bound."""
    return sa.literal(value, sa.String, literal_execute=True)


def install_id(connection) -> str:
    """This database's install id (made once, by migration 0003)."""
    return connection.execute(sa.select(installation.c.id)).scalar_one()


def idempotency_key(d, install: str, rule_id: str, kind: str) -> sa.ColumnElement[str]:
    """md5(install : rule : user : occurrence : action), 32 hex digits.

    From what the action is, never from row numbers (DESIGN invariant 9): a second
    install or a restored database cannot give a new message an old message's
    Message-ID or webhook-id. Decisions made before schema 0003 have no ref and use
    their occurrence key.
    """
    parts = [
        sa.literal(f"{install}:{rule_id}:", sa.String),
        d.c.user_id,
        sa.literal(":", sa.String),
        sa.func.coalesce(d.c.occurrence_ref, d.c.occurrence_key),
        sa.literal(f":{kind}", sa.String),
    ]
    text = parts[0]
    for part in parts[1:]:
        text = text + part
    return sa.func.md5(text, type_=sa.String)


def plan_actions(connection, spec: PlanSpec, run_id: int, at: datetime) -> dict[str, int]:
    """Outbox rows for this run's planned decisions: one per action, per variant."""
    install = install_id(connection)
    d = decisions
    u = users.alias("u")
    columns = ["idempotency_key", "decision_id", "run_id", "rule_id", "user_id", "kind"]
    columns += ["channel", "variant", "priority", "payload", "state", "attempts"]
    columns += ["next_attempt_at", "created_at", "updated_at"]
    for variant, plans in spec.actions.items():
        for action in plans:
            payload = {
                "rule": spec.rule_id,
                "variant": variant,
                "params": action.params,
                "send_window": {"between": list(spec.send_window)} if spec.send_window else None,
            }
            filters = [d.c.run_id == run_id, d.c.outcome == "planned"]
            if variant is not None:
                filters.append(d.c.variant == variant)
            if action.channel in ("email", "sms", "audience"):
                # A rule that can reach the user on one channel still skips the
                # channels they did not consent to.
                filters.append(channel_consent_sql(u, action.channel))
            source = (
                sa.select(
                    idempotency_key(d, install, spec.rule_id, action.kind),
                    d.c.id,
                    d.c.run_id,
                    d.c.rule_id,
                    d.c.user_id,
                    sa.literal(action.kind, sa.String),
                    sa.literal(action.channel, sa.String),
                    d.c.variant,
                    sa.literal(spec.priority, sa.Integer),
                    sa.literal(payload, JsonDocument),
                    sa.literal("planned", sa.String),
                    sa.literal(0, sa.Integer),
                    sa.literal(at, UTCDateTime),
                    sa.literal(at, UTCDateTime),
                    sa.literal(at, UTCDateTime),
                )
                .select_from(d.join(u, u.c.id == d.c.user_id))
                .where(*filters)
            )
            statement = (
                dialect_insert(connection, outbox)
                .from_select(columns, source.where(sa.true()))
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
            )
            connection.execute(statement)
    # Counted afterwards: INSERT ... SELECT rowcounts are not reliable across drivers.
    rows = connection.execute(
        sa.select(outbox.c.kind, sa.func.count())
        .where(outbox.c.run_id == run_id)
        .group_by(outbox.c.kind)
    ).all()
    return {kind: count for kind, count in rows}
