"""What each console page shows, as template contexts built from the engine's own
readers: `operations` and `delivery_status` (what `nudge status` prints), `user_detail`
(`nudge users show`), `explain_user` (`nudge explain`) and the measurement report.

Every function here is synchronous (the routes run them in the thread pool) and reads
through `store.read()`, except the explanation of one rule for one user, asked for
explicitly: `explain_user` dry-runs the rule in a transaction it rolls back, as
`nudge explain` does, so it commits nothing but briefly takes the write lock.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.serve.console.render import local_time, localise
from engine.store import Store
from engine.store.planning import Decision, OutboxAction

decisions = Decision.__table__
outbox = OutboxAction.__table__

LISTED_ACTIONS = 50  # retrying and dead actions shown on the outbox page, each
RECENT_DECISIONS = 20


def _text(value: Any, zone) -> str:
    """A stored value for people: instants in the shop's zone, documents as JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return local_time(value, zone)


def _load_ruleset(store: Store):
    # Read from disk at each request: the console shows the rules as they are now.
    from engine.planning.compile import load_ruleset

    return load_ruleset(store.settings)


# ---------------------------------------------------------------- rules and daemons


def rules_view(store: Store, now: datetime) -> dict[str, Any]:
    from engine.operations import operations

    zone = store.settings.tz
    ruleset = _load_ruleset(store)
    ops = operations(store, ruleset, now=now)
    return {
        "page": "rules",
        "title": "Rules",
        "as_of": local_time(now, zone),
        "rules": [_rule(row, zone) for row in ops.rules],
        "broken": sorted(ruleset.broken),
        "daemons": [
            {
                "id": row["id"][:8],
                "host": row["host"],
                "pid": row["pid"],
                "started": local_time(row["started_at"], zone),
                "heartbeat": local_time(row["heartbeat_at"], zone),
                "state": row["state"],
            }
            for row in ops.daemons
        ],
        "missed": [
            {
                "rule": row["rule"],
                "slots": row.get("missed"),
                "through": local_time(row.get("through"), zone),
            }
            for row in ops.missed
        ],
    }


def _rule(row: dict[str, Any], zone) -> dict[str, Any]:
    last = row["last_run"]
    if last is not None:
        last = {
            "at": local_time(last["at"], zone),
            "status": last["status"],
            "counts": (
                f"planned {last['planned']}, held out {last['held_out']}, "
                f"suppressed {last['suppressed']}"
            ),
            "error": last["error"],
        }
    return {
        "id": row["rule"],
        "status": row["status"],
        "trigger": row["trigger"],
        "next_fire": local_time(row["next_fire"], zone),
        "last_run": last,
    }


# ---------------------------------------------------------------- outbox


def outbox_view(store: Store, now: datetime) -> dict[str, Any]:
    from engine.delivery.status import delivery_status

    zone = store.settings.tz
    status = delivery_status(store, limit=LISTED_ACTIONS)

    def action(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "rule": row["rule_id"],
            "user": row["user_id"],
            "kind": row["kind"],
            "attempts": row["attempts"],
            "next_attempt": local_time(row.get("next_attempt_at"), zone),
            "updated": local_time(row["updated_at"], zone),
            "reason": row["reason"],
            "error": row["last_error"],
        }

    return {
        "page": "outbox",
        "title": "Outbox",
        "as_of": local_time(now, zone),
        "counts": list(status.counts.items()),
        "oldest_pending": local_time(status.oldest_pending_at, zone),
        "skipped": list(status.skipped_reasons.items()),
        "retrying": [action(row) for row in status.retrying],
        "retrying_hidden": status.retrying_total - len(status.retrying),
        "dead": [action(row) for row in status.dead],
        "dead_hidden": status.dead_total - len(status.dead),
    }


# ---------------------------------------------------------------- one user


def user_view(
    store: Store, user_id: str, now: datetime, rule_id: str | None = None
) -> dict[str, Any]:
    """The user's fields, stages, latest events and decisions (with their actions), and
    with `rule_id` the explanation of that rule for them now. Raises NotFoundError."""
    from engine.users import user_detail

    settings = store.settings
    zone = settings.tz
    with store.read() as connection:
        detail = user_detail(connection, settings, user_id, now)
        decided = _decisions(connection, user_id, zone)
    ruleset = _load_ruleset(store)
    fields = {**detail["user"], **detail["consent"], "tags": ", ".join(detail["tags"])}
    fields["stage"] = detail["stage"]
    profile = detail["profile"] or {}
    return {
        "page": "user",
        "title": f"User {user_id}",
        "user_query": user_id,
        "user_id": user_id,
        "as_of": local_time(now, zone),
        "fields": [(name, _text(value, zone)) for name, value in fields.items()],
        "profile": [(name, _text(value, zone)) for name, value in profile.items()],
        "stages": [
            (row["stage"], local_time(row["entered_at"], zone), local_time(row["exited_at"], zone))
            for row in detail["stage_history"]
        ],
        "events": [_event(row, zone) for row in detail["recent_events"]],
        "decisions": decided,
        "rule_ids": sorted(ruleset.rules),
        "rule": rule_id or "",
        **_explanation(store, ruleset, user_id, rule_id, now),
    }


def _event(row: dict[str, Any], zone) -> dict[str, Any]:
    amount = ""
    if row["amount"] is not None:
        amount = f"{row['amount']} {row['currency'] or ''}".strip()
    facts = [
        ("amount", amount),
        ("order", row["order_id"]),
        ("coupon", row["coupon_code"]),
        ("utm source", row["utm_source"]),
        ("utm campaign", row["utm_campaign"]),
        ("event id", row["source_id"]),
    ]
    return {
        "at": local_time(row["occurred_at"], zone),
        "type": row["type"],
        "facts": [(name, str(value)) for name, value in facts if value not in (None, "")],
    }


def _decisions(connection: sa.Connection, user_id: str, zone) -> list[dict[str, Any]]:
    """The user's latest decisions, every rule, each with the actions it planned."""
    rows = (
        connection.execute(
            sa.select(
                decisions.c.id,
                decisions.c.rule_id,
                decisions.c.outcome,
                decisions.c.reason,
                decisions.c.variant,
                decisions.c.occurrence_key,
                decisions.c.decided_at,
            )
            .where(decisions.c.user_id == user_id)
            .order_by(decisions.c.decided_at.desc(), decisions.c.id.desc())
            .limit(RECENT_DECISIONS)
        )
        .mappings()
        .all()
    )
    actions: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    if actions:
        found = connection.execute(
            sa.select(
                outbox.c.decision_id,
                outbox.c.kind,
                outbox.c.state,
                outbox.c.reason,
                outbox.c.attempts,
                outbox.c.last_error,
                outbox.c.sent_at,
                outbox.c.next_attempt_at,
            )
            .where(outbox.c.decision_id.in_(list(actions)))
            .order_by(outbox.c.id)
        ).mappings()
        for action in found:
            actions[action["decision_id"]].append(_action(action, zone))
    return [
        {
            "at": local_time(row["decided_at"], zone),
            "rule": row["rule_id"],
            "outcome": row["outcome"],
            "reason": row["reason"],
            "variant": row["variant"],
            "occurrence": row["occurrence_key"],
            "actions": actions[row["id"]],
        }
        for row in rows
    ]


def _action(row, zone) -> dict[str, Any]:
    when = ""
    if row["state"] == "sent":
        when = f"sent {local_time(row['sent_at'], zone)}"
    elif row["state"] == "planned":
        when = f"due {local_time(row['next_attempt_at'], zone)}"
    return {
        "kind": row["kind"],
        "state": row["state"],
        "reason": row["reason"],
        "attempts": row["attempts"],
        "when": when,
        # A row that ended sent keeps the error of an earlier attempt: not news.
        "error": None if row["state"] == "sent" else row["last_error"],
    }


# An explanation is a dry run: it opens a writing transaction (rolled back) and refreshes
# stages in it, holding SQLite's write lock meanwhile. One at a time per process, so
# an operator clicking through users never queues ingest and the daemon behind a burst.
_EXPLAINING = threading.Lock()


def _explanation(
    store: Store, ruleset, user_id: str, rule_id: str | None, now: datetime
) -> dict[str, str | None]:
    """`nudge explain USER --rule RULE` at `now` as the command prints it (local times),
    or why it cannot be explained (an unknown or invalid rule): the rest of the page
    still shows."""
    from engine.checking.explain import explain_user, render_explanation

    if not rule_id:
        return {"explanation": None, "explain_error": None}
    if rule_id not in ruleset.rules:
        return {"explanation": None, "explain_error": ruleset.describe_missing(rule_id)}
    with _EXPLAINING:
        data = explain_user(store, ruleset, user_id, rule_id, at=now)
    text = render_explanation(localise(data, store.settings.tz))
    return {"explanation": text, "explain_error": None}


# ---------------------------------------------------------------- measurement


def report_view(store: Store, now: datetime) -> tuple[str | None, str | None]:
    """(the measurement report's page for the 30 days before `now`, None), or
    (None, why there is nothing to report)."""
    from engine.measurement.html import collect_kpis, render_html_report
    from engine.measurement.report import build_report

    report = build_report(store, until=now)
    if report.empty:
        return None, report.message(store.settings.tz)
    kpis = collect_kpis(store, report.since, report.until)
    return render_html_report(report, kpis, store.settings), None
