"""Planning one rule at T, set-based: occurrences -> ... -> decisions and outbox.

Steps, in order (each a column of one SQL query, never a Python loop over users):
occurrences -> conditions (`when`) -> not already decided -> `unless` -> consent ->
re-eligibility (`every`) -> exclusive group -> per-rule caps -> holdout -> variant.
The result is materialised once into a temporary table; counts, decisions and
outbox rows are all read from it, in the caller's transaction. A dry-run is this same
code followed by a rollback (DESIGN invariant 3).

At most once (invariant 1) is the decisions table's unique (rule, user, occurrence):
a decision that planned or held out is final; a suppressed one may later turn into
a plan (the user consented, a cap expired) through the upsert below, and nothing else
ever rewrites it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine import clock
from engine.config import Settings
from engine.consent import channel_consent_sql
from engine.planning.assignment import bucket_sql, holdout_basis_points, variant_sql
from engine.planning.audience_exits import any_unqualified, remove_unqualified
from engine.planning.spec import PlanSpec
from engine.store.people import Event, User
from engine.store.planning import Decision, Installation, OutboxAction, Run
from engine.store.profiles import profiles_as_of
from engine.store.sql import dialect_insert
from engine.store.types import JsonDocument, UTCDateTime
from engine.triggers.base import TriggerContext
from engine.triggers.registry import missed_for, occurrences_for, slot_for
from engine.triggers.schedule import slot_plan as schedule_plan

users = User.__table__
events = Event.__table__
decisions = Decision.__table__
outbox = OutboxAction.__table__
runs = Run.__table__
installation = Installation.__table__

SAMPLE_SIZE = 3


@dataclass(frozen=True)
class Sources:
    """What conditions are compiled against at T (engine.conditions uses these)."""

    at: datetime
    users: sa.FromClause
    profiles: sa.FromClause
    stage: sa.ColumnElement
    event: sa.FromClause | None
    # When the occurrence's chain started (`since="trigger"`); None where conditions
    # are evaluated without an occurrence.
    trigger_at: sa.ColumnElement | None = None


# (expressions, sources) -> one boolean SQL expression; supplied by the caller so the
# pipeline does not depend on how conditions are parsed.
ConditionCompiler = Callable[[Sequence[object], Sources], sa.ColumnElement[bool]]


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


def build_sources(connection: Connection, settings: Settings, at: datetime, event_trigger: bool):
    from engine.lifecycle import stage_case

    profiles = profiles_as_of(connection, at).alias("p")
    stage = stage_case(users, profiles, as_of=at, settings=settings.lifecycle)
    event = events.alias("ev") if event_trigger else None
    return Sources(at=at, users=users, profiles=profiles, stage=stage, event=event)


def plan_rule(
    connection: Connection,
    spec: PlanSpec,
    *,
    settings: Settings,
    at: datetime,
    compile_conditions: ConditionCompiler,
    superiors: Sequence[str] = (),
    user_id: str | None = None,
    mode: str = "run",
    changed_since: datetime | None = None,
) -> RuleOutcome:
    """Evaluate `spec` at `at` inside the caller's transaction; returns what it decided.

    `superiors` are the rules of the same exclusive group with a higher priority,
    already evaluated at this T. `user_id` restricts evaluation to one user
    (dry-run --user); such an evaluation claims no run slot.
    """
    started = clock.monotonic()
    outcome = RuleOutcome(rule_id=spec.rule_id, status="done")
    tctx = TriggerContext(
        connection=connection,
        settings=settings,
        at=at,
        # The same watermark for a one-user evaluation, so that explain and
        # `dry-run --user` say exactly what the sweep would do.
        watermark=_watermark(connection, spec, at),
        rule_id=spec.rule_id,
        changed_since=changed_since,
    )
    if spec.status == "paused":
        outcome.status = "paused"
        return outcome
    if not spec.in_flight(at):
        outcome.status = "outside_flight"
        return outcome
    if user_id is None:
        outcome.missed = _record_missed(connection, spec, tctx, mode)
    occurrences = occurrences_for(spec.trigger, tctx)
    if occurrences is None:
        outcome.status = "not_due"
        return outcome
    if changed_since is not None and _nothing_new(connection, spec, occurrences):
        # A steady tick with nothing new for this rule costs one indexed EXISTS (the
        # daemon's hourly full sweep still does everything). Rules with audiences
        # also check that no member stopped qualifying: those must leave the
        # audience at once, not at the next full sweep.
        if not _keeps_audience(spec):
            outcome.status = "idle"
            return outcome
        if user_id is None:
            sources = build_sources(connection, settings, at, spec.event_trigger)
            if not any_unqualified(connection, spec, sources, compile_conditions):
                outcome.status = "idle"
                return outcome
    outcome.slot = slot_for(spec.trigger, tctx)
    run_id = _claim_run(connection, spec, at, outcome.slot, mode, user_id)
    if run_id is None:
        outcome.status = "already_claimed"
        return outcome
    outcome.run_id = run_id
    if connection.dialect.name == "postgresql":
        # The planner's statements are estimated costly (correlated EXISTS on tables
        # that grew since the last ANALYZE), which turns on JIT compilation: ~0.4 s per
        # statement that then runs in milliseconds. For this transaction only.
        connection.exec_driver_sql("SET LOCAL jit = off")

    sources = build_sources(connection, settings, at, spec.event_trigger)
    candidates = _candidates(
        spec,
        sources,
        occurrences,
        compile_conditions,
        superiors,
        user_id,
        settings.rules.assignment_salt,
        connection.dialect.name,
    )
    scratch = _scratch_table(connection)
    connection.execute(scratch.insert().from_select([c.name for c in scratch.c], candidates))
    _count(connection, scratch, spec, outcome)
    _record_decisions(connection, scratch, spec, run_id, at)
    if spec.status == "active":
        outcome.actions = _plan_actions(connection, spec, run_id, at)
        if user_id is None:
            outcome.audience_removed = remove_unqualified(
                connection, spec, sources, compile_conditions, at
            )
    outcome.samples = _samples(connection, run_id, spec.rule_id)
    scratch.drop(connection)
    outcome.duration_ms = int((clock.monotonic() - started) * 1000)
    if spec.trigger.kind == "schedule":
        outcome.coalesced = schedule_plan(spec.trigger, tctx).coalesced
    if _considered_nothing(connection, spec, outcome, occurrences):
        # An idle tick leaves no trace: `runs` holds evaluations that did something
        # (and every schedule slot, which is its own claim).
        connection.execute(runs.delete().where(runs.c.id == run_id))
        outcome.run_id = None
        return outcome
    _finish_run(connection, run_id, outcome)
    return outcome


def _keeps_audience(spec: PlanSpec) -> bool:
    return spec.status == "active" and any(
        action.kind == "audience" for plans in spec.actions.values() for action in plans
    )


def _nothing_new(connection, spec: PlanSpec, occurrences: sa.Select) -> bool:
    """Whether a steady tick can skip this rule: one indexed EXISTS.

    Event and after triggers re-read what changed within CHANGE_LAG (the daemon's
    safety margin), which is mostly occurrences already decided for good: those are
    filtered out by the very `_not_decided` the candidate query applies, so a tick
    with only those is as idle as one with none (the full evaluation would match
    nothing and leave no run). A stage trigger's occurrences move its watermark even
    when decided, so they are counted as they are.
    """
    if spec.trigger.kind in ("event", "after"):
        occ = occurrences.subquery("occ")
        key = sa.literal("once", sa.String) if spec.once_per_user else occ.c.occurrence_key
        undecided = sa.select(occ.c.user_id).where(_not_decided(spec, occ.c.user_id, key))
        return not connection.execute(sa.select(sa.exists(undecided))).scalar()
    return not connection.execute(sa.select(sa.exists(occurrences.subquery()))).scalar()


def _considered_nothing(connection, spec: PlanSpec, outcome: RuleOutcome, occurrences) -> bool:
    """Whether this evaluation is worth no run row.

    Event and after triggers re-read their look-back window every tick and skip what
    was decided: nothing matched means nothing new. A stage trigger reads the entries
    recorded since its watermark, which only a recorded run moves: keep the run if it
    saw any entry, matched or not, so that entry is not considered again.
    """
    if outcome.matched or outcome.audience_removed or spec.trigger.kind == "schedule":
        return False
    if spec.trigger.kind == "stage":
        return not connection.execute(sa.select(sa.exists(occurrences.subquery()))).scalar()
    return True


def _record_missed(connection, spec: PlanSpec, tctx: TriggerContext, mode: str) -> int:
    """Record schedule slots older than misfire_grace as one `missed` run."""
    missed = missed_for(spec.trigger, tctx)
    if missed is None:
        return 0
    slot, counts = missed
    values = {
        "rule_id": spec.rule_id,
        "rule_hash": spec.rule_hash,
        "slot": slot,
        "at": tctx.at,
        "mode": mode,
        "status": "missed",
        "counts": counts,
        "started_at": tctx.at,
        "finished_at": tctx.at,
    }
    connection.execute(dialect_insert(connection, runs).values(**values).on_conflict_do_nothing())
    return int(counts["missed"])


def prune_runs(connection, *, before: datetime) -> int:
    """Delete runs older than `before` that decided nothing.

    Kept whatever their age: each rule's latest run (a schedule rule's last claimed
    slot) and the latest completed run of each rule content (a stage rule's watermark:
    without it the rule would sweep its whole stage again).
    """
    latest = sa.select(sa.func.max(runs.c.id)).group_by(runs.c.rule_id)
    watermarks = (
        sa.select(sa.func.max(runs.c.id))
        .where(runs.c.status == "done")
        .group_by(runs.c.rule_id, runs.c.rule_hash)
    )
    decided = sa.exists().where(decisions.c.run_id == runs.c.id)
    return connection.execute(
        runs.delete().where(
            runs.c.at < before,
            runs.c.status.in_(("done", "missed", "failed")),
            ~decided,
            runs.c.id.not_in(latest.scalar_subquery()),
            runs.c.id.not_in(watermarks.scalar_subquery()),
        )
    ).rowcount


def _watermark(connection, spec: PlanSpec, at: datetime) -> datetime | None:
    """T of the latest completed evaluation before `at` of this exact rule content."""
    return connection.execute(
        sa.select(sa.func.max(runs.c.at)).where(
            runs.c.rule_id == spec.rule_id,
            runs.c.rule_hash == spec.rule_hash,
            runs.c.status == "done",
            runs.c.at < at,
        )
    ).scalar()


def _claim_run(connection, spec, at, slot, mode, user_id) -> int | None:
    """Insert the (rule, slot) run row; None if another evaluation already holds it."""
    if user_id is not None:
        # A one-user evaluation must not take the slot from the real sweep.
        slot = f"{slot}#user:{user_id}:{uuid.uuid4().hex[:8]}"
    values = {
        "rule_id": spec.rule_id,
        "rule_hash": spec.rule_hash,
        "slot": slot,
        "at": at,
        "mode": mode,
        "status": "running",
        "counts": {},
        "started_at": at,
    }
    statement = dialect_insert(connection, runs).values(**values).on_conflict_do_nothing()
    result = connection.execute(statement.returning(runs.c.id))
    return result.scalar()


def _candidates(
    spec, sources, occurrences, compile_conditions, superiors, user_id, salt, dialect
) -> sa.Select:
    occ = occurrences.subquery("occ")
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
    filters = [_not_decided(spec, occ.c.user_id, key)]
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
    ranked = _ranks_occurrences(spec)
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
    return _decide(spec, matched, sources.at, superiors, salt, dialect)


def _ranks_occurrences(spec: PlanSpec) -> bool:
    """Whether one user can have several occurrences in a run that must be ranked.

    Stage and schedule triggers give one occurrence per user per run; only event and
    after triggers can give several, and only `once`, `every` and caps care. Every
    other rule is spared a sort of its whole audience.
    """
    if spec.trigger.kind not in ("event", "after"):
        return False
    return spec.once_per_user or spec.every is not None or spec.cap_max is not None


def _not_decided(spec: PlanSpec, user_id, key) -> sa.ColumnElement[bool]:
    """No final decision yet for (rule, user, occurrence)."""
    d = decisions.alias("done")
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


def _decide(spec: PlanSpec, matched, at: datetime, superiors, salt: str, dialect: str):
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
    # derived from the stored columns afterwards (_settle), so no correlated subquery
    # runs more than once per row.
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


def _settled(scratch: sa.Table, spec: PlanSpec) -> tuple[sa.ColumnElement, sa.ColumnElement]:
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
_SCRATCH = sa.Table(
    "nudge_plan_scratch",
    sa.MetaData(),
    sa.Column("user_id", sa.String(128)),
    sa.Column("occurrence_key", sa.String(128)),
    sa.Column("occurred_at", UTCDateTime),
    sa.Column("trigger_at", UTCDateTime),
    sa.Column("event_id", sa.BigInteger),
    sa.Column("occurrence_ref", sa.String(32)),
    sa.Column("outcome", sa.String(16)),
    sa.Column("reason", sa.String(64)),
    sa.Column("variant", sa.String(64)),
    sa.Column("held_out", sa.Boolean),
    prefixes=["TEMPORARY"],
)


def _scratch_table(connection: Connection) -> sa.Table:
    _SCRATCH.drop(connection, checkfirst=True)
    _SCRATCH.create(connection)
    return _SCRATCH


def _count(connection, scratch, spec: PlanSpec, outcome: RuleOutcome) -> None:
    settled, variant = _settled(scratch, spec)
    # Labels unlike any scratch column: a GROUP BY name means the input column first.
    settled, variant = settled.label("settled_outcome"), variant.label("settled_variant")
    rows = connection.execute(
        sa.select(settled, scratch.c.reason, variant, sa.func.count()).group_by(
            settled, scratch.c.reason, variant
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


def _record_decisions(connection, scratch, spec: PlanSpec, run_id: int, at: datetime) -> None:
    settled, variant = _settled(scratch, spec)
    columns = ["run_id", "rule_id", "user_id", "occurrence_key", "outcome", "reason"]
    columns += ["variant", "decided_at", "occurred_at", "trigger_at", "event_id", "occurrence_ref"]
    source = sa.select(
        sa.literal(run_id, sa.BigInteger),
        sa.literal(spec.rule_id, sa.String),
        scratch.c.user_id,
        scratch.c.occurrence_key,
        settled,
        scratch.c.reason,
        variant,
        sa.literal(at, UTCDateTime),
        scratch.c.occurred_at,
        scratch.c.trigger_at,
        scratch.c.event_id,
        scratch.c.occurrence_ref,
    ).where(sa.true())  # SQLite's upsert-after-SELECT parsing ambiguity
    statement = dialect_insert(connection, decisions).from_select(columns, source)
    prior, new = decisions.c, statement.excluded
    # What may be decided again (see _not_decided): a suppression other than `unless`
    # turns into a plan, or into an `unless` stop, which is final; a shadow outcome
    # turns into whatever the live rule decides. Nothing else is ever rewritten.
    # The constants are written into the statement: Citus sends the ON CONFLICT
    # clause to the shards without its parameters' types ("could not determine data
    # type of parameter $1").
    suppressed, unless = _constant("suppressed"), _constant("unless")
    shadow = _constant("shadow")
    revisable = sa.or_(
        sa.and_(
            prior.outcome == suppressed,
            sa.or_(
                sa.func.coalesce(prior.reason, _constant("")) != unless,
                prior.occurrence_key == _constant("once"),
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


def _constant(value: str) -> sa.ColumnElement[str]:
    """A string written into the statement as a typed literal, not bound."""
    return sa.literal(value, sa.String, literal_execute=True)


def install_id(connection) -> str:
    """This database's install id (made once, by migration 0003)."""
    return connection.execute(sa.select(installation.c.id)).scalar_one()


def _idempotency_key(d, install: str, rule_id: str, kind: str) -> sa.ColumnElement[str]:
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


def _plan_actions(connection, spec: PlanSpec, run_id: int, at: datetime) -> dict[str, int]:
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
                    _idempotency_key(d, install, spec.rule_id, action.kind),
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


def _samples(connection, run_id: int, rule_id: str) -> list[dict]:
    """A few users per outcome with their actions, for dry-run output."""
    samples: list[dict] = []
    for kind in ("planned", "held_out", "shadow", "suppressed"):
        rows = connection.execute(
            sa.select(decisions.c.id, decisions.c.user_id, decisions.c.variant, decisions.c.reason)
            .where(decisions.c.run_id == run_id, decisions.c.outcome == kind)
            .order_by(decisions.c.user_id)
            .limit(SAMPLE_SIZE)
        ).all()
        for decision_id, user_id, variant, reason in rows:
            actions = connection.execute(
                sa.select(outbox.c.kind, outbox.c.payload)
                .where(outbox.c.decision_id == decision_id)
                .order_by(outbox.c.id)
            ).all()
            samples.append(
                {
                    "user": user_id,
                    "outcome": kind,
                    "reason": reason,
                    "variant": variant,
                    "actions": [{"kind": k, "params": payload["params"]} for k, payload in actions],
                }
            )
    return samples


def _finish_run(connection, run_id: int, outcome: RuleOutcome) -> None:
    counts = outcome.as_dict()
    for key in ("rule", "status", "slot", "samples", "error", "duration_ms"):
        counts.pop(key)
    connection.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            status="done",
            counts=counts,
            finished_at=runs.c.started_at,
            duration_ms=outcome.duration_ms,
        )
    )
