"""`nudge explain USER --rule R`: why a user would or would not be acted on at T.

Every clause's value for the user comes from one SQL query that selects each clause
as a column (TRUE / FALSE / NULL = unknown, a missing input). The verdict itself is
not re-derived here: it is a dry-run of the rule for that one user, so explain and
dry-run cannot disagree.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.consent import channel_consent_sql
from engine.errors import NotFoundError
from engine.localtime import zone_named
from engine.planning.assignment import bucket, holdout_basis_points, variant_for_bucket
from engine.planning.pipeline import build_sources, is_final
from engine.planning.runner import evaluate, refresh_stages_up_to
from engine.store import Store
from engine.store.people import User
from engine.store.planning import Decision, OutboxAction
from engine.triggers.base import TriggerContext
from engine.triggers.registry import occurrences_for

users = User.__table__
decisions = Decision.__table__
outbox = OutboxAction.__table__


def _truth(value) -> str:
    if value is None:
        return "unknown"
    return "true" if bool(value) else "false"


def explain_user(
    store: Store, ruleset, user_id: str, rule_id: str, *, at: datetime, funnel: bool = False
) -> dict:
    if rule_id not in ruleset.rules:
        raise NotFoundError(ruleset.describe_missing(rule_id))
    compiled = ruleset.rules[rule_id]
    spec = compiled.spec
    settings = store.settings
    with store.connect() as connection:
        transaction = connection.begin()
        try:
            user = (
                connection.execute(sa.select(users).where(users.c.id == user_id)).mappings().first()
            )
            if user is None:
                raise NotFoundError(_missing_user(connection, user_id))
            refresh_stages_up_to(connection, store, at)
            sources = build_sources(connection, settings, at, spec.event_trigger)
            trigger_ctx = TriggerContext(connection=connection, settings=settings, at=at)
            occurrence_query = occurrences_for(spec.trigger, trigger_ctx)
            occurrences = _occurrences(connection, occurrence_query, user_id)
            clauses = _clauses(connection, compiled, sources, occurrence_query, user_id)
            channels = {
                channel: _truth(
                    connection.execute(
                        sa.select(channel_consent_sql(users, channel)).where(users.c.id == user_id)
                    ).scalar()
                )
                for channel in spec.contact_channels
            }
            history = _history(connection, rule_id, user_id)
            already = _decided(connection, spec, occurrence_query, user_id)
            group = _group(connection, ruleset, compiled, user_id, at)
            caps = _caps(connection, spec, user_id, at)
            funnel_rows = _funnel(connection, compiled, sources, occurrence_query) if funnel else []
        finally:
            transaction.rollback()
    verdict = _verdict(store, ruleset, rule_id, user_id, at)
    if verdict["outcome"] == "not_matched" and already is not None:
        verdict = already
    salt = settings.rules.assignment_salt
    holdout_bucket = bucket(user_id, rule_id, salt, "holdout")
    return {
        "user": user_id,
        "rule": rule_id,
        "at": at.isoformat(),
        "status": spec.status,
        "trigger": {"kind": spec.trigger.kind, "value": spec.trigger.value},
        "occurrences": occurrences,
        "in_flight": spec.in_flight(at),
        "clauses": clauses,
        "consent": channels,
        "holdout": {
            "bucket": holdout_bucket,
            "threshold": holdout_basis_points(spec.holdout),
            "held_out": spec.holdout > 0 and holdout_bucket < holdout_basis_points(spec.holdout),
        },
        "variant": variant_for_bucket(bucket(user_id, rule_id, salt, "variant"), spec.variants),
        "exclusive_group": group,
        "caps": caps,
        "send_window": _send_window(spec, user, settings.tz, at),
        "history": history,
        "verdict": verdict,
        "funnel": funnel_rows,
    }


def _missing_user(connection, user_id: str) -> str:
    import difflib

    nearby = connection.execute(
        sa.select(users.c.id).where(users.c.id.like(user_id[:2] + "%")).limit(500)
    ).scalars()
    close = difflib.get_close_matches(user_id, list(nearby), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no user {user_id!r}{hint}"


def _occurrences(connection, query, user_id) -> list[dict]:
    if query is None:
        return []
    occ = query.subquery("occ")
    rows = connection.execute(
        sa.select(occ.c.occurrence_key, occ.c.occurred_at)
        .where(occ.c.user_id == user_id)
        .order_by(occ.c.occurred_at.desc())
        .limit(5)
    ).all()
    return [{"key": key, "at": when.isoformat() if when else None} for key, when in rows]


def _base_from(sources, occurrence_query):
    """users + profiles (+ the triggering event) for one user, and the sources with the
    user's newest occurrence as the trigger of `since="trigger"` windows."""
    u, p = sources.users, sources.profiles
    joined = u.outerjoin(p, p.c.user_id == u.c.id)
    if occurrence_query is None:
        return joined, sources
    occ = occurrence_query.subquery("occ")
    newest = sa.select(occ).where(occ.c.user_id == u.c.id).order_by(occ.c.occurred_at.desc())
    trigger_at = newest.with_only_columns(occ.c.trigger_at).limit(1).scalar_subquery()
    sources = replace(sources, trigger_at=trigger_at)
    if sources.event is not None:
        # The newest triggering event of the user, when there is one.
        latest = newest.with_only_columns(occ.c.event_id).limit(1).scalar_subquery()
        joined = joined.outerjoin(sources.event, sources.event.c.id == latest)
    return joined, sources


def _clauses(connection, compiled, sources, occurrence_query, user_id) -> list[dict]:
    """Every clause, leaf comparison and operand of the rule, for one user, one query."""
    base, sources = _base_from(sources, occurrence_query)
    columns = compiled.explain_columns(sources)
    if not columns:
        return []
    query = sa.select(*(c.column.label(f"x{i}") for i, (_, c) in enumerate(columns)))
    query = query.select_from(base).where(sources.users.c.id == user_id)
    row = connection.execute(query).first()
    result = []
    for index, (part, column) in enumerate(columns):
        value = row[index] if row is not None else None
        shown = _value_text(value) if column.role == "operand" else _truth(value)
        result.append(
            {
                "part": part,
                "role": column.role,
                "source": column.source,
                "label": f"{part}.{column.label}",
                "parent": f"{part}.{column.parent}" if column.parent else None,
                "value": shown,
            }
        )
    return result


def _value_text(value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _history(connection, rule_id, user_id) -> list[dict]:
    rows = connection.execute(
        sa.select(
            decisions.c.decided_at,
            decisions.c.outcome,
            decisions.c.reason,
            decisions.c.variant,
            decisions.c.occurrence_key,
        )
        .where(decisions.c.rule_id == rule_id, decisions.c.user_id == user_id)
        .order_by(decisions.c.decided_at.desc())
        .limit(10)
    ).all()
    return [
        {
            "at": at.isoformat(),
            "outcome": outcome,
            "reason": reason,
            "variant": variant,
            "occurrence": key,
        }
        for at, outcome, reason, variant, key in rows
    ]


def _decided(connection, spec, occurrence_query, user_id) -> dict | None:
    """The final decision already taken for one of the user's occurrences, if any.

    A decided occurrence is not evaluated again (the dry-run verdict would say "not
    matched"); explain says what was decided and what became of its actions instead.
    """
    if occurrence_query is None:
        return None
    occ = occurrence_query.subquery("occ")
    keys = sa.select(occ.c.occurrence_key).where(occ.c.user_id == user_id)
    if spec.once_per_user:
        keys = sa.select(sa.literal("once", sa.String))
    row = (
        connection.execute(
            sa.select(decisions)
            .where(
                decisions.c.rule_id == spec.rule_id,
                decisions.c.user_id == user_id,
                decisions.c.occurrence_key.in_(keys),
                is_final(decisions, spec),
            )
            .order_by(decisions.c.decided_at.desc(), decisions.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    actions = connection.execute(
        sa.select(
            outbox.c.kind,
            outbox.c.state,
            outbox.c.reason,
            outbox.c.attempts,
            outbox.c.sent_at,
            outbox.c.next_attempt_at,
        )
        .where(outbox.c.decision_id == row["id"])
        .order_by(outbox.c.id)
    ).all()
    return {
        "outcome": "decided",
        "reason": None,
        "decided": {
            "at": row["decided_at"].isoformat(),
            "outcome": row["outcome"],
            "reason": row["reason"],
            "variant": row["variant"],
            "occurrence": row["occurrence_key"],
        },
        "variant": row["variant"],
        "actions": [
            {
                "kind": kind,
                "state": state,
                "reason": reason,
                "attempts": attempts,
                "sent_at": sent_at.isoformat() if sent_at else None,
                "next_attempt_at": due.isoformat() if state == "planned" else None,
            }
            for kind, state, reason, attempts, sent_at, due in actions
        ],
    }


def _group(connection, ruleset, compiled, user_id, at) -> dict | None:
    from engine.planning.runner import superiors_of

    spec = compiled.spec
    if spec.exclusive_group is None:
        return None
    superiors = superiors_of(compiled, ruleset.rules.values())
    won = []
    if superiors:
        won = (
            connection.execute(
                sa.select(decisions.c.rule_id).where(
                    decisions.c.user_id == user_id,
                    decisions.c.rule_id.in_(superiors),
                    decisions.c.outcome == "planned",
                    decisions.c.decided_at == at,
                )
            )
            .scalars()
            .all()
        )
    return {
        "name": spec.exclusive_group,
        "priority": spec.priority,
        "higher_priority_rules": list(superiors),
        "won_by": list(won),
    }


def _caps(connection, spec, user_id, at) -> dict:
    result: dict = {}
    planned = [
        decisions.c.rule_id == spec.rule_id,
        decisions.c.user_id == user_id,
        decisions.c.outcome == "planned",
    ]
    if spec.cap_max is not None and spec.cap_per is not None:
        used = connection.execute(
            sa.select(sa.func.count()).where(*planned, decisions.c.decided_at > at - spec.cap_per)
        ).scalar()
        result["per_user"] = {"max": spec.cap_max, "used": used, "capped": used >= spec.cap_max}
    if spec.every is not None:
        last = connection.execute(
            sa.select(sa.func.max(decisions.c.decided_at)).where(*planned)
        ).scalar()
        result["every"] = {
            "last_planned": last.isoformat() if last else None,
            "eligible": last is None or last <= at - spec.every,
        }
    return result


def _send_window(spec, user, shop_zone: ZoneInfo, at: datetime) -> dict | None:
    if spec.send_window is None:
        return None
    # A stored zone that is not one (imported before ingest checked it) reads as the
    # shop's, as delivery's send windows read it (engine.delivery.policy.user_zone).
    zone = (zone_named(user["timezone"]) if user["timezone"] else None) or shop_zone
    local = at.astimezone(zone)
    start, end = spec.send_window
    clock_text = local.strftime("%H:%M")
    inside = start <= clock_text < end if start < end else clock_text >= start or clock_text < end
    return {
        "between": [start, end],
        "user_local_time": local.isoformat(),
        "inside": inside,
        "note": None if inside else "delivery is deferred to the next allowed time, not dropped",
    }


def _verdict(store, ruleset, rule_id, user_id, at) -> dict:
    evaluation = evaluate(store, ruleset, at=at, rule_ids=[rule_id], user_id=user_id, dry_run=True)
    outcome = evaluation.outcomes[0]
    if outcome.status != "done":
        return {"outcome": outcome.status, "reason": outcome.error}
    for sample in outcome.samples:
        if sample["user"] == user_id:
            return {
                "outcome": sample["outcome"],
                "reason": sample["reason"],
                "variant": sample["variant"],
                "actions": sample["actions"],
            }
    return {"outcome": "not_matched", "reason": "no occurrence matches every condition"}


def _funnel(connection, compiled, sources, occurrence_query) -> list[dict]:
    """Users left after each `when` clause, then after consent (one aggregate query)."""
    if occurrence_query is None:
        return []
    spec = compiled.spec
    occ = occurrence_query.subquery("occ")
    sources = replace(sources, trigger_at=occ.c.trigger_at)
    u, p = sources.users, sources.profiles
    joined = occ.join(u, u.c.id == occ.c.user_id).outerjoin(p, p.c.user_id == u.c.id)
    if sources.event is not None:
        event = sources.event
        joined = joined.join(
            event, sa.and_(event.c.id == occ.c.event_id, event.c.user_id == occ.c.user_id)
        )
    steps: list[tuple[str, sa.ColumnElement[bool]]] = []
    running: list[sa.ColumnElement[bool]] = []
    for expression in spec.when:
        running.append(compiled.compile_conditions([expression], sources))
        steps.append((getattr(expression, "source", str(expression)), sa.and_(*running)))
    for expression in spec.unless:
        running.append(~compiled.compile_conditions([expression], sources))
        steps.append((f"unless {getattr(expression, 'source', expression)}", sa.and_(*running)))
    if spec.contact_channels:
        running.append(
            sa.or_(*(channel_consent_sql(u, channel) for channel in spec.contact_channels))
        )
        steps.append(("consent: " + " or ".join(spec.contact_channels), sa.and_(*running)))
    columns = [sa.func.count(sa.distinct(occ.c.user_id)).label("s0")]
    for index, (_, predicate) in enumerate(steps, start=1):
        columns.append(
            sa.func.count(sa.distinct(sa.case((predicate, occ.c.user_id)))).label(f"s{index}")
        )
    row = connection.execute(sa.select(*columns).select_from(joined)).first()
    result = [{"step": f"trigger: {spec.trigger.kind} {spec.trigger.value}", "users": row[0]}]
    for index, (label, _) in enumerate(steps, start=1):
        result.append({"step": label, "users": row[index]})
    return result


def _clause_lines(clauses: list[dict]) -> list[str]:
    """Clauses, then their comparisons indented, each with the values it compared."""
    operands: dict[str, list[str]] = {}
    for item in clauses:
        if item["role"] == "operand":
            operands.setdefault(item["parent"], []).append(f"{item['source']} = {item['value']}")
    lines = []
    for item in clauses:
        if item["role"] == "clause":
            kind = "unless" if item["part"].startswith("unless") else "when"
            lines.append(f"  {kind:<6} {item['source']}  -> {item['value']}")
        elif item["role"] == "leaf":
            seen = "; ".join(operands.get(item["label"], []))
            note = f"  ({seen})" if seen else ""
            if lines and lines[-1].endswith(f"{item['source']}  -> {item['value']}"):
                lines[-1] += note  # a clause that is one comparison: one line
            else:
                lines.append(f"           {item['source']}  -> {item['value']}{note}")
    return lines


def _decided_text(verdict: dict) -> str:
    """'decided at T: planned (variant v); email sent at T2, coupon sent at T2'."""
    decided = verdict["decided"]
    text = f"decided at {decided['at']}: {decided['outcome']}"
    if decided["reason"]:
        text += f" ({decided['reason']})"
    if decided["variant"]:
        text += f", variant {decided['variant']}"
    parts = []
    for action in verdict["actions"]:
        if action["state"] == "sent":
            parts.append(f"{action['kind']} sent at {action['sent_at']}")
        elif action["state"] == "planned" and action["attempts"]:
            parts.append(
                f"{action['kind']} retrying (attempt {action['attempts']}, "
                f"next at {action['next_attempt_at']})"
            )
        elif action["state"] == "planned":
            parts.append(f"{action['kind']} due at {action['next_attempt_at']}")
        else:
            reason = f" ({action['reason']})" if action["reason"] else ""
            parts.append(f"{action['kind']} {action['state']}{reason}")
    return text + ("; " + ", ".join(parts) if parts else "")


def render_explanation(data: dict) -> str:
    lines = [f"{data['user']} / {data['rule']} at {data['at']}"]
    verdict = data["verdict"]
    if verdict["outcome"] == "decided":
        lines.append(f"verdict: {_decided_text(verdict)}")
    else:
        summary = verdict["outcome"]
        summary += f" ({verdict['reason']})" if verdict.get("reason") else ""
        if verdict.get("variant"):
            summary += f", variant {verdict['variant']}"
        lines.append(f"verdict: {summary}")
    trigger = data["trigger"]
    lines.append(f"trigger: {trigger['kind']} {trigger['value']}")
    if data["occurrences"]:
        for occurrence in data["occurrences"]:
            lines.append(f"  occurrence {occurrence['key']} at {occurrence['at']}")
    else:
        lines.append("  no occurrence for this user at this time")
    if not data["in_flight"]:
        lines.append("flight: outside the flight window")
    if data["status"] != "active":
        lines.append(f"status: {data['status']}")
    if data["clauses"]:
        lines.append("conditions:")
        lines.extend(_clause_lines(data["clauses"]))
    for channel, value in data["consent"].items():
        lines.append(f"consent {channel}: {value}")
    holdout = data["holdout"]
    if holdout["threshold"]:
        state = "held out" if holdout["held_out"] else "treated"
        lines.append(f"holdout: bucket {holdout['bucket']} vs {holdout['threshold']} -> {state}")
    if data["variant"]:
        lines.append(f"variant: {data['variant']}")
    if data["exclusive_group"]:
        group = data["exclusive_group"]
        won = f", won by {', '.join(group['won_by'])}" if group["won_by"] else ""
        lines.append(f"exclusive group {group['name']} (priority {group['priority']}){won}")
    caps = data["caps"]
    if "per_user" in caps:
        cap = caps["per_user"]
        state = "capped" if cap["capped"] else "within the cap"
        lines.append(f"cap: {cap['used']} of {cap['max']} used -> {state}")
    if "every" in caps:
        every = caps["every"]
        last = every["last_planned"] or "never"
        state = "eligible" if every["eligible"] else "too soon"
        lines.append(f"re-eligibility: last planned {last} -> {state}")
    if data["send_window"]:
        window = data["send_window"]
        state = "inside" if window["inside"] else "outside (deferred)"
        lines.append(
            f"send window {'-'.join(window['between'])}: local {window['user_local_time']} {state}"
        )
    for past in data["history"]:
        reason = f" ({past['reason']})" if past["reason"] else ""
        lines.append(f"history: {past['at']} {past['outcome']}{reason}")
    if data["funnel"]:
        lines.append("funnel:")
        for step in data["funnel"]:
            lines.append(f"  {step['users']:>8}  {step['step']}")
    return "\n".join(lines)
