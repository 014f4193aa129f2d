"""Rule-evaluation benchmark: the engine against the same audiences written by hand in SQL.

Builds a deterministic shop (1,000,000 users / 5,000,000 events by default) whose data
gives every rule a real audience at T = 2026-11-11 20:00 Asia/Shanghai (Double Eleven
evening, a Wednesday): lapsed gold members, VIPs, recent visitors and buyers, refunds,
follow-ups due from earlier thank-you mails, and schedule slots due at T. Then, in one
run per backend:

1. `engine.planning.runner.evaluate(store, ruleset, at=T)`: a real evaluation of the
   shipped rules plus synthetic ones (20 in all), timed per rule and in total;
2. the same audiences as one hand-written INSERT ... SELECT per rule into a scratch
   table (same triggers, conditions, consent, re-eligibility, exclusive group, caps,
   md5 holdout and variant buckets), timed the same way, and checked row for row
   against the engine's decisions (user, occurrence, outcome, reason, variant);
3. the ratio engine / hand-written (target <= 1.25);
4. the daemon's steady idle tick (`changed_since`, nothing new) against as many
   indexed round trips as it issued statements (targets: <= 50 ms at 10k users,
   <= 1 s at 1M).

Steps 1-3 are repeated (`--repeats`, default 3) interleaved, each repetition checked
row for row and then forgotten; the hand-written side writes the same rows as the
engine (a copy of `decisions` and of `outbox`, with their indexes: one decision per
user and one outbox row per action with its JSON payload and idempotency key).

Loading (bulk executemany / COPY, profile and stage refresh) is timed and reported but
is not the measured figure.

    .venv/bin/python bench/evaluate.py --users 50000 --events 250000 --backend sqlite
    .venv/bin/python bench/evaluate.py                      # 1M users, 5M events, both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import clock  # noqa: E402
from engine.config import DatabaseSettings, RulesSettings, Settings, ShopSettings  # noqa: E402
from engine.lifecycle import refresh_stages  # noqa: E402
from engine.planning import runner  # noqa: E402
from engine.planning.assignment import BUCKETS, holdout_basis_points, variant_ranges  # noqa: E402
from engine.planning.compile import RuleSet, load_ruleset  # noqa: E402
from engine.planning.pipeline import install_id  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402
from engine.store.planning import Decision, OutboxAction, Run  # noqa: E402
from engine.store.profiles import refresh_profiles  # noqa: E402
from engine.store.types import UTCDateTime  # noqa: E402
from engine.triggers import after as after_trigger  # noqa: E402
from engine.triggers import event as event_trigger  # noqa: E402
from engine.triggers.schedule import due_slot  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHOP_TZ = "Asia/Shanghai"
T = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai on 11.11
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DAY = 86_400
BATCH_USERS = 20_000

# ---------------------------------------------------------------------------------------
# The shop: personas chosen so that every lifecycle stage, and so every rule, has people.

PERSONAS = (
    ("new_visitor", 8),
    ("prospect", 10),
    ("registered", 14),
    ("first_purchase", 12),
    ("repeat_buyer", 18),
    ("vip", 5),
    ("lapsed_member", 15),
    ("dormant_member", 5),  # signed up 3-12 months ago, never bought: lapsed too
    ("churned", 13),
)
BUYER_TIERS = (("gold", 20), ("silver", 25), ("bronze", 25), (None, 28), ("platinum", 2))
VIP_TIERS = (("gold", 50), ("silver", 30), ("platinum", 20))
CITIES = ("Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu")
FILLER = (("visit", 70), ("email_open", 20), ("ad_click", 10))


def _table(pairs):
    return [name for name, weight in pairs for _ in range(weight)]


@dataclass
class Batch:
    users: list[tuple] = field(default_factory=list)
    tags: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)


@dataclass
class History:
    """Decisions of earlier runs (rule -> [(user, occurrence_key, decided_at)])."""

    decisions: dict[str, list[tuple[str, str, datetime]]] = field(
        default_factory=lambda: defaultdict(list)
    )


def _ts(ago: float) -> str:
    """T - ago seconds, in the UTC text form UTCDateTime stores on SQLite."""
    return (T - timedelta(seconds=ago)).replace(tzinfo=None).isoformat(" ", "microseconds")


def generate_shop(users: int, events: int, seed: int, history: History) -> Iterator[Batch]:
    """Deterministic users, tags and events, in batches of users (events in user order)."""
    rng = random.Random(seed)
    personas, buyer_tiers, vip_tiers = _table(PERSONAS), _table(BUYER_TIERS), _table(VIP_TIERS)
    fillers = _table(FILLER)
    emitted = 0
    batch = Batch()
    created = _ts(0)
    for index in range(users):
        user_id = f"u{index:07d}"
        persona = personas[rng.randrange(len(personas))]
        structural: list[tuple[str, float, float | None]] = []  # (type, ago, amount)
        member = persona not in ("new_visitor", "prospect")
        tier = None
        signup = None
        if persona == "new_visitor":
            first = rng.uniform(3600, 29 * DAY)
        elif persona == "prospect":
            first = rng.uniform(31 * DAY, 300 * DAY)
        else:
            low, high = {
                "registered": (3600, 89 * DAY),
                "first_purchase": (DAY, 400 * DAY),
                "repeat_buyer": (10 * DAY, 500 * DAY),
                "vip": (30 * DAY, 500 * DAY),
                "lapsed_member": (120 * DAY, 500 * DAY),
                "dormant_member": (92 * DAY, 360 * DAY),
                "churned": (380 * DAY, 520 * DAY),
            }[persona]
            signup = rng.uniform(low, high)
            first = signup + 600
            structural.append(("signup", signup, None))
            tier = buyer_tiers[rng.randrange(len(buyer_tiers))]
        purchases: list[float] = []
        if persona == "first_purchase":
            purchases = [rng.uniform(3600, min(89 * DAY, signup))]
        elif persona in ("repeat_buyer", "vip"):
            latest = rng.uniform(3600, min(89 * DAY, signup))
            count = rng.randint(2, 6) if persona == "repeat_buyer" else rng.randint(3, 8)
            purchases = [latest] + [rng.uniform(latest, signup) for _ in range(count - 1)]
        elif persona in ("lapsed_member", "churned"):
            low, high = (91, 360) if persona == "lapsed_member" else (366, 500)
            latest = rng.uniform(low * DAY, min(high * DAY, signup))
            purchases = [latest] + [rng.uniform(latest, signup) for _ in range(rng.randint(0, 4))]
        if persona == "vip":
            tier = vip_tiers[rng.randrange(len(vip_tiers))]
        for ago in purchases:
            high = 2000.0 if persona == "vip" else 600.0
            low = 500.0 if persona == "vip" else 20.0
            structural.append(("purchase", ago, round(rng.uniform(low, high), 2)))
        if purchases and rng.random() < 0.04:
            # Refunds cluster right after recent orders, so some land in the last day.
            bought = min(purchases)
            ago = rng.uniform(60, min(bought, 2 * DAY)) if rng.random() < 0.3 else bought / 2
            amount = round(rng.uniform(10, 100), 2)
            structural.append(("refund", max(ago, 60.0), amount))
        structural.append(("visit", first, None))
        remaining_users = users - index
        budget = (events - emitted) / remaining_users - len(structural)
        if index == users - 1:
            filler = max(0, events - emitted - len(structural))
        else:
            filler = int(rng.expovariate(1 / budget)) if budget > 0.05 else 0
        rows = structural + [
            (fillers[rng.randrange(len(fillers))], max(60.0, first * rng.random() ** 2), None)
            for _ in range(filler)
        ]
        rows.sort(key=lambda row: -row[1])
        for number, (kind, ago, amount) in enumerate(rows):
            order = f"o{index}-{number}" if kind == "purchase" else None
            batch.events.append(
                (
                    f"s{number:04d}",
                    user_id,
                    kind,
                    _ts(ago),
                    amount,
                    "CNY" if amount else None,
                    order,
                    created,
                )  # fmt: skip
            )
        emitted += len(rows)
        has_email = rng.random() < (0.95 if member else 0.6 if persona == "new_visitor" else 0.3)
        has_phone = member and rng.random() < 0.5
        city = CITIES[rng.randrange(len(CITIES))] if rng.random() < 0.6 else None
        batch.users.append(
            (
                user_id,
                f"{user_id}@example.com" if has_email else None,
                f"138{index:08d}" if has_phone else None,
                tier,
                _ts(signup) if signup is not None else None,
                json.dumps({"city": city}) if city else "{}",
                rng.random() < 0.75,
                rng.random() < 0.5,
                rng.random() < 0.6,
                _ts(rng.uniform(DAY, 200 * DAY)) if rng.random() < 0.04 else None,
                created,
            )
        )
        for tag, share in (
            ("vip-club", 0.3 if persona == "vip" else 0.02),
            ("wholesale", 0.03),
            ("no-reminders", 0.05),
        ):
            if rng.random() < share:
                batch.tags.append((user_id, tag))
        _seed_history(rng, history, user_id, persona)
        if len(batch.users) >= BATCH_USERS:
            yield batch
            batch = Batch()
    if batch.users:
        yield batch


def _seed_history(rng: random.Random, history: History, user_id: str, persona: str) -> None:
    """Earlier runs' decisions: follow-ups due now, re-eligibility and caps to honour."""
    seeded = history.decisions
    if persona in ("first_purchase", "repeat_buyer") and rng.random() < 0.15:
        days = rng.choice((1.5, 2.5, 3.5, 5.0, 9.0, 12.0))
        seeded["first-purchase-thank-you"].append((user_id, "once", T - timedelta(days=days)))
    if persona == "lapsed_member" and rng.random() < 0.08:
        seeded["winback-lapsed-members"].append((user_id, "stage:0", T - timedelta(days=10)))
    if persona == "repeat_buyer" and rng.random() < 0.05:
        seeded["bench-repeat-ab"].append((user_id, "stage:0", T - timedelta(days=20)))
    if rng.random() < 0.02:
        seeded["bench-browse-reminder"].append((user_id, "event:0", T - timedelta(days=2)))
    if rng.random() < 0.1:
        seeded["bench-daily-recent-visitors"].append(
            (user_id, "schedule:earlier", T - timedelta(days=3))
        )


# ---------------------------------------------------------------------------------------
# Loading: bulk paths straight into the tables, then profiles and stages as of T.

USER_INSERT_COLUMNS = (
    "id, email, phone, member_tier, member_since, attributes, email_opt_in, sms_opt_in, "
    "ads_opt_in, unsubscribed_at, created_at, updated_at, stage_dirty"
)
EVENT_INSERT_COLUMNS = "source_id, user_id, type, occurred_at, amount, currency, order_id, " + (
    "ingested_at, properties"
)


def load_shop(store: Store, users: int, events: int, seed: int) -> tuple[dict, History]:
    """Fill an empty store; returns timings and the seeded history."""
    timings: dict[str, float] = {}
    history = History()
    started = clock.monotonic()
    dropped = _drop_event_indexes(store)
    if store.is_postgres:
        _copy_postgres(store, generate_shop(users, events, seed, history))
    else:
        _insert_sqlite(store, generate_shop(users, events, seed, history))
    timings["generate_and_insert_s"] = clock.monotonic() - started
    started = clock.monotonic()
    with store.begin() as connection:
        for statement in dropped:
            connection.exec_driver_sql(statement)
    timings["event_indexes_s"] = clock.monotonic() - started
    started = clock.monotonic()
    with store.begin() as connection:
        refresh_profiles(connection, None, T)
    timings["profiles_s"] = clock.monotonic() - started
    _seed_decisions(store, history)
    _analyze(store)
    started = clock.monotonic()
    with store.begin() as connection:
        refreshed = refresh_stages(connection, store.settings, T)
    timings["stages_s"] = clock.monotonic() - started
    timings["stage_entries"] = dict(refreshed.entered)
    _analyze(store)
    return timings, history


def _drop_event_indexes(store: Store) -> list[str]:
    """Drop the plain indexes of `events` for the bulk load; returns their CREATE statements."""
    with store.begin() as connection:
        if store.is_postgres:
            rows = connection.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint "
                "WHERE conrelid = 'events'::regclass)"
            ).all()
        else:
            rows = connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'events' AND sql IS NOT NULL"
            ).all()
        for name, _ in rows:
            connection.exec_driver_sql(f'DROP INDEX "{name}"')
    return [definition for _, definition in rows]


def _insert_sqlite(store: Store, batches: Iterator[Batch]) -> None:
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-262144")
        user_sql = f"INSERT INTO users ({USER_INSERT_COLUMNS}) VALUES ({', '.join('?' * 13)})"
        event_sql = f"INSERT INTO events ({EVENT_INSERT_COLUMNS}) VALUES ({', '.join('?' * 9)})"
        for batch in batches:
            cursor.execute("BEGIN")
            cursor.executemany(user_sql, (row + (row[-1], 1) for row in batch.users))
            cursor.executemany("INSERT INTO user_tags (user_id, tag) VALUES (?, ?)", batch.tags)
            cursor.executemany(event_sql, (row + ("{}",) for row in batch.events))
            cursor.execute("COMMIT")
        cursor.close()
    finally:
        raw.close()


def _copy_postgres(store: Store, batches: Iterator[Batch]) -> None:
    def text(value) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        return str(value)

    def lines(rows, utc_columns, extra=()) -> bytes:
        out = []
        for row in rows:
            values = [text(v) for v in row] + list(extra)
            for column in utc_columns:
                if values[column] != "\\N":
                    values[column] += "+00"
            out.append("\t".join(values))
        return ("\n".join(out) + "\n").encode()

    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for batch in batches:
            users_copy = f"COPY users ({USER_INSERT_COLUMNS}) FROM STDIN"
            with cursor.copy(users_copy) as copy:
                copy.write(lines((row + (row[-1],) for row in batch.users), (4, 9, 10, 11), ("t",)))
            if batch.tags:
                with cursor.copy("COPY user_tags (user_id, tag) FROM STDIN") as copy:
                    copy.write(lines(batch.tags, ()))
            with cursor.copy(f"COPY events ({EVENT_INSERT_COLUMNS}) FROM STDIN") as copy:
                copy.write(lines(batch.events, (3, 7), ("{}",)))
            raw.commit()
        cursor.close()
    finally:
        raw.close()


def _seed_decisions(store: Store, history: History) -> None:
    """Earlier runs with a content hash of their own, so no rule's watermark moves."""
    runs, decisions = Run.__table__, Decision.__table__
    with store.begin() as connection:
        for rule_id, rows in sorted(history.decisions.items()):
            run_id = connection.execute(
                runs.insert()
                .values(
                    rule_id=rule_id,
                    rule_hash="bench-seed",
                    slot="bench-seed",
                    at=T - timedelta(days=20),
                    mode="run",
                    status="done",
                    counts={},
                    started_at=T - timedelta(days=20),
                )
                .returning(runs.c.id)
            ).scalar_one()
            connection.execute(
                decisions.insert(),
                [
                    {
                        "run_id": run_id,
                        "rule_id": rule_id,
                        "user_id": user_id,
                        "occurrence_key": key,
                        "outcome": "planned",
                        "reason": None,
                        "variant": None,
                        "decided_at": decided_at,
                        # As the engine writes them (never NULL since schema 0007).
                        "occurred_at": decided_at,
                    }
                    for user_id, key, decided_at in rows
                ],
            )


def _analyze(store: Store) -> None:
    """PostgreSQL: what autovacuum would have done after a load. SQLite: nothing (Nudge
    never runs ANALYZE there, so the benchmark does not either)."""
    if not store.is_postgres:
        return
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


# ---------------------------------------------------------------------------------------
# Rules: the shipped ones plus synthetic ones, up to 20.

SEGMENTS = "loyal: purchase_count >= 3 and total_spent >= 800\n"

SYNTHETIC_RULES = {
    "bench-winback-gold-big": """
trigger: {stage: lapsed_member}
when: [member_tier == "gold", total_spent >= 1000]
priority: 90
exclusive_group: winback
experiment: {holdout: 5%}
actions:
  coupon: {value: 50, currency: CNY, min_order: 200, expires_in: 14d}
  email: {creative: winback}
""",
    "bench-vip-sms": """
trigger: {stage: vip}
when: [is_set(phone), 'count("visit", within="30d") >= 2']
once: per_user
actions:
  sms: {creative: vip}
""",
    "bench-repeat-ab": """
trigger: {stage: repeat_buyer}
when: [avg_order_value >= 150, 'not has_tag("wholesale")']
every: 30d
experiment:
  variants:
    a: {weight: 2}
    b: {weight: 1, email: {creative: cross-sell}}
actions:
  email: {creative: thank-you}
""",
    "bench-registered-nudge": """
trigger: {stage: registered}
when: days_since(signup_at) >= 3
once: per_user
actions:
  coupon: {value: 5, currency: CNY, expires_in: 7d}
  email: {creative: welcome}
""",
    "bench-churned-reactivation": """
trigger: {stage: churned}
when: total_spent >= 500
experiment: {holdout: 20%}
actions:
  email: {creative: winback}
""",
    "bench-prospect-ads": """
trigger: {stage: prospect}
when: 'count("visit", within="14d") >= 3'
actions:
  audience: {name: warm-prospects}
""",
    "bench-big-purchase": """
trigger: {event: purchase, where: event.amount >= 300}
actions:
  tag: {add: [big-spender]}
  email: {creative: thank-you}
""",
    "bench-browse-reminder": """
trigger: {event: visit}
unless: ["days_since(last_purchase_at) < 7", 'has_tag("no-reminders")']
caps: {per_user: {max: 1, per: 7d}}
actions:
  email: {creative: cross-sell}
""",
    "bench-refund-apology": """
trigger: {event: refund}
actions:
  coupon: {value: 10, currency: CNY, expires_in: 14d}
  email: {creative: thank-you}
""",
    "bench-daily-recent-visitors": """
trigger: {schedule: "0 20 * * *"}
when: days_since(last_visit_at) <= 7
every: 7d
actions:
  email: {creative: double-eleven}
""",
    "bench-weekly-gold": """
trigger: {schedule: "0 20 * * WED"}
when: ['member_tier in ["gold", "platinum"]', 'sum("purchase.amount", within="90d") >= 300']
actions:
  coupon: {value: 30, currency: CNY, min_order: 150, expires_in: 3d}
  audience: {name: gold-weekly}
""",
    "bench-hourly-club-webhook": """
trigger: {schedule: "0 * * * *"}
when: ['has_tag("vip-club")', total_spent >= 2000]
actions:
  webhook: {url: "https://example.com/hooks/club", body: {segment: club}}
""",
    "bench-thanks-review": """
trigger: {after: first-purchase-thank-you, wait: 2d}
unless: refund_count >= 1
once: per_user
actions:
  email: {creative: thank-you}
""",
    "bench-loyal-shadow": """
status: shadow
trigger: {stage: repeat_buyer}
when: ['in_segment("loyal")', 'attributes.city == "Shanghai"']
actions:
  tag: {add: [loyal]}
""",
}
MAX_RULES = 20


def write_rules(folder: Path) -> None:
    """The shipped rules (and segments) plus synthetic ones, up to MAX_RULES in total."""
    shipped = sorted((REPO / "rules").glob("*.y*ml"))
    for path in shipped:
        shutil.copy(path, folder / path.name)
    segments = folder / "segments.yaml"
    existing = segments.read_text(encoding="utf-8") if segments.exists() else ""
    segments.write_text(existing + SEGMENTS, encoding="utf-8")
    room = MAX_RULES - len([p for p in shipped if p.stem != "segments"])
    for rule_id, text in list(SYNTHETIC_RULES.items())[: max(room, 0)]:
        (folder / f"{rule_id}.yaml").write_text(text.lstrip(), encoding="utf-8")


# ---------------------------------------------------------------------------------------
# The same audiences by hand: one INSERT ... SELECT per rule.
#
# Aliases: o = the occurrence row, u = users, p = profiles. Time bounds are bound
# parameters named t_<days>d (T minus that many days).

VISITS = "SELECT {agg} FROM events v WHERE v.user_id = u.id AND v.type = 'visit' AND "
VISITS_WITHIN = VISITS + "v.occurred_at <= :t AND v.occurred_at > :t_{days}d"


def _visits_at_least(count: int, days: int) -> str:
    return f"({VISITS_WITHIN.format(agg='count(*)', days=days)}) >= {count}"


def _has_tag(tag: str) -> str:
    return f"EXISTS (SELECT 1 FROM user_tags g WHERE g.user_id = u.id AND g.tag = '{tag}')"


STAGE_IS_NOT_CHURNED = (
    # Stages were refreshed at T, so the open membership row is the stage at T.
    "EXISTS (SELECT 1 FROM stage_memberships s WHERE s.user_id = u.id "
    "AND s.exited_at IS NULL AND s.stage <> 'churned')"
)


@dataclass(frozen=True)
class HandRule:
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()


HAND_RULES: dict[str, HandRule] = {
    "welcome-gift-pack": HandRule(
        when=(
            "u.email IS NOT NULL AND u.email <> ''",
            f"EXISTS ({VISITS_WITHIN.format(agg='1', days=7)})",
        )
    ),
    "first-purchase-thank-you": HandRule(),
    "cross-sell-after-first-purchase": HandRule(unless=("p.purchase_count >= 2",)),
    "vip-retargeting": HandRule(when=("p.last_visit_at >= :t_60d",)),
    "double-eleven": HandRule(
        when=(f"(p.purchase_count >= 1 OR {_visits_at_least(2, 30)})", STAGE_IS_NOT_CHURNED)
    ),
    "winback-lapsed-members": HandRule(
        when=("u.member_tier IN ('gold', 'silver')", "p.total_spent >= 200"),
        unless=("p.last_purchase_at > :t_90d",),
    ),
    "bench-winback-gold-big": HandRule(when=("u.member_tier = 'gold'", "p.total_spent >= 1000")),
    "bench-vip-sms": HandRule(when=("u.phone <> ''", _visits_at_least(2, 30))),
    "bench-repeat-ab": HandRule(when=("p.avg_order_value >= 150", "NOT " + _has_tag("wholesale"))),
    "bench-registered-nudge": HandRule(when=("p.signup_at <= :t_3d",)),
    "bench-churned-reactivation": HandRule(when=("p.total_spent >= 500",)),
    "bench-prospect-ads": HandRule(when=(_visits_at_least(3, 14),)),
    "bench-big-purchase": HandRule(when=("o.amount >= 300",)),
    "bench-browse-reminder": HandRule(
        unless=("p.last_purchase_at > :t_7d", _has_tag("no-reminders"))
    ),
    "bench-refund-apology": HandRule(),
    "bench-daily-recent-visitors": HandRule(when=("p.last_visit_at >= :t_7d",)),
    "bench-weekly-gold": HandRule(
        when=(
            "u.member_tier IN ('gold', 'platinum')",
            "(SELECT coalesce(sum(b.amount), 0) FROM events b WHERE b.user_id = u.id "
            "AND b.type = 'purchase' AND b.occurred_at <= :t AND b.occurred_at > :t_90d) >= 300",
        )
    ),
    "bench-hourly-club-webhook": HandRule(when=(_has_tag("vip-club"), "p.total_spent >= 2000")),
    "bench-thanks-review": HandRule(unless=("p.refund_count >= 1",)),
    "bench-loyal-shadow": HandRule(
        when=("p.purchase_count >= 3", "p.total_spent >= 800", "{city} = 'Shanghai'")
    ),
}
TIME_PARAMS = {f"t_{days}d": timedelta(days=days) for days in (1, 3, 7, 14, 30, 60, 90)}
CONSENT = {
    "email": "(u.email_opt_in IS TRUE AND u.unsubscribed_at IS NULL AND u.email IS NOT NULL)",
    "sms": "(u.sms_opt_in IS TRUE AND u.phone IS NOT NULL)",
    "audience": "(u.ads_opt_in IS TRUE AND u.unsubscribed_at IS NULL)",
}


def _copy_table(source: sa.Table, name: str, metadata: sa.MetaData) -> sa.Table:
    """`source`'s columns, unique keys and indexes under another name: the hand-written
    SQL writes rows into tables that cost what the engine's cost to write."""
    # The table's info too: on SQLite a (id, user_id) key is created as the rowid
    # `PRIMARY KEY (id)` (engine/store/keys.py), or ids would be left NULL.
    columns = (column._copy() for column in source.columns)
    table = sa.Table(name, metadata, *columns, info=dict(source.info))
    for index in source.indexes:
        columns = [table.c[column.name] for column in index.columns]
        sa.Index(f"{name}_{index.name}", *columns, unique=index.unique)
    for constraint in source.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            columns = [table.c[column.name] for column in constraint.columns]
            sa.Index(f"{name}_{constraint.name or 'unique'}", *columns, unique=True)
    return table


HAND_METADATA = sa.MetaData()
# A copy of `decisions` (what the engine records per user) and of `outbox` (one row per
# action, with its JSON payload and idempotency key).
HAND_TABLE = _copy_table(Decision.__table__, "bench_hand", HAND_METADATA)
HAND_OUTBOX = _copy_table(OutboxAction.__table__, "bench_hand_outbox", HAND_METADATA)


def _bucket(prefix_param: str, dialect: str) -> str:
    text = f"CAST(:{prefix_param} AS VARCHAR) || u.id"
    if dialect == "postgresql":
        return f"(CAST(CAST('x' || substr(md5({text}), 1, 8) AS bit(32)) AS BIGINT) % {BUCKETS})"
    return f"nudge_bucket({text})"


def hand_statement(compiled, superiors, dialect: str, settings: Settings):
    """(SQL text, parameters) of one rule's hand-written INSERT ... SELECT."""
    spec, hand = compiled.spec, HAND_RULES[compiled.spec.rule_id]
    trigger = spec.trigger
    params: dict[str, object] = {"rule_id": spec.rule_id, "t": T}
    params.update({name: T - delta for name, delta in TIME_PARAMS.items()})
    people = "JOIN users u ON u.id = o.user_id JOIN profiles p ON p.user_id = u.id"
    if trigger.kind == "stage":
        source = f"FROM stage_memberships o {people}"
        where = [
            "o.stage = :stage",
            "o.entered_at <= :t",
            "(o.exited_at IS NULL OR o.exited_at > :t)",
        ]
        params["stage"] = trigger.value
        key = "'stage:' || CAST(o.id AS VARCHAR)"
    elif trigger.kind == "event":
        source = f"FROM events o {people}"
        where = ["o.type = :event_type", "o.occurred_at <= :t", "o.occurred_at > :lookback"]
        params.update(event_type=trigger.value, lookback=T - event_trigger.LOOKBACK)
        key = "'event:' || CAST(o.id AS VARCHAR)"
    elif trigger.kind == "schedule":
        # Every user has events here, so the inner join to profiles loses nobody.
        source = "FROM users u JOIN profiles p ON p.user_id = u.id"
        where = []
        fire = due_slot(trigger.value, settings.tz, T)
        params["slot"] = f"schedule:{fire.isoformat(timespec='seconds')}"
        key = "CAST(:slot AS VARCHAR)"
    else:
        # The followed rule's hand decisions of this run (the seeded ones never reached
        # anyone: no outbox row), due when the wait from their occurrence has passed,
        # and only those whose messages are on their way (engine/triggers/after.py).
        source = f"FROM bench_hand o {people}"
        due = T - (trigger.wait or timedelta())
        where = ["o.rule_id = :followed", "o.outcome = 'planned'", "o.occurred_at <= :due"]
        where += ["o.occurred_at > :due_lookback", HAND_REACHED]
        params.update(followed=trigger.value, due=due, due_lookback=due - after_trigger.LOOKBACK)
        key = "'after:' || CAST(o.id AS VARCHAR)"
    occurred = {"stage": "o.entered_at", "event": "o.occurred_at"}.get(trigger.kind, ":t")
    if spec.once_per_user:
        key = "'once'"
    city = (
        "u.attributes ->> 'city'"
        if dialect == "postgresql"
        else ("json_extract(u.attributes, '$.city')")
    )
    where += [clause.replace("{city}", city) for clause in hand.when]
    where.append(
        "NOT EXISTS (SELECT 1 FROM decisions d WHERE d.rule_id = :rule_id AND d.user_id = u.id "
        f"AND d.occurrence_key = {key} AND d.outcome <> 'suppressed' AND d.decided_at < :t)"
    )
    checks = []
    unless = " OR ".join(f"({c})" for c in hand.unless) if hand.unless else "FALSE"
    if hand.unless:
        checks.append((unless, "unless"))
    # Several occurrences of one user in one run (event and after triggers): `every`
    # and caps hold within the run too, oldest first among those `unless` let through.
    ranked = trigger.kind in ("event", "after") and (
        spec.once_per_user or spec.every is not None or spec.cap_max is not None
    )
    rank = "1"
    if ranked:
        rank = (
            f"ROW_NUMBER() OVER (PARTITION BY u.id, CASE WHEN {unless} THEN 1 ELSE 0 END "
            f"ORDER BY o.occurred_at, {key})"
        )
    if spec.contact_channels:
        reach = " OR ".join(CONSENT[channel] for channel in spec.contact_channels)
        checks.append((f"NOT ({reach})", "no_consent"))
    prior = "FROM decisions d WHERE d.user_id = u.id AND d.rule_id = :rule_id "
    prior += "AND d.outcome = 'planned' AND d.decided_at < :t AND d.decided_at > "
    if spec.every is not None:
        params["every_since"] = T - spec.every
        checks.append((f"EXISTS (SELECT 1 {prior}:every_since) OR {rank} > 1", "recently_received"))
    if superiors:
        names = ", ".join(f"'{name}'" for name in superiors)
        # Held out of a higher rule counts too: that user is its control group.
        won = "SELECT 1 FROM bench_hand h WHERE h.user_id = u.id "
        won += "AND h.outcome IN ('planned', 'held_out') "
        checks.append((f"EXISTS ({won}AND h.rule_id IN ({names}))", "exclusive_group"))
    if spec.cap_max is not None and spec.cap_per is not None:
        params["cap_since"] = T - spec.cap_per
        used = f"(SELECT count(*) {prior}:cap_since)"
        checks.append((f"{used} + {rank} > {spec.cap_max}", "capped"))
    reason = "NULL"
    if checks:
        reason = "CASE " + " ".join(f"WHEN {c} THEN '{n}'" for c, n in checks) + " END"
    held = "FALSE"
    if spec.holdout > 0:
        params["holdout_prefix"] = f"{settings.rules.assignment_salt}:{spec.rule_id}:holdout:"
        held = f"({_bucket('holdout_prefix', dialect)} < {holdout_basis_points(spec.holdout)})"
    variant_bucket = "NULL"
    variant = "NULL"
    if spec.variants:
        params["variant_prefix"] = f"{settings.rules.assignment_salt}:{spec.rule_id}:variant:"
        variant_bucket = _bucket("variant_prefix", dialect)
        ranges = variant_ranges(spec.variants)
        variant = "CASE " + " ".join(
            f"WHEN s.vb < {high} THEN '{name}'" for name, _, high in ranges
        )
        variant += " END"
    success = "planned" if spec.status == "active" else "shadow"
    sql = (
        # Materialised so that each check runs once per row, not once per CASE using it.
        f"WITH s AS MATERIALIZED (SELECT u.id AS user_id, {key} AS occurrence_key, "
        f"{occurred} AS occurred_at, {reason} AS reason, {held} AS held, "
        f"{variant_bucket} AS vb {source} "
        f"WHERE {' AND '.join(where)}) "
        "INSERT INTO bench_hand (run_id, rule_id, user_id, occurrence_key, outcome, reason, "
        "variant, decided_at, occurred_at, trigger_at, occurrence_ref) "
        "SELECT 0, CAST(:rule_id AS VARCHAR), s.user_id, s.occurrence_key, "
        f"CASE WHEN s.reason IS NOT NULL THEN 'suppressed' WHEN s.held THEN 'held_out' "
        f"ELSE '{success}' END, s.reason, "
        f"CASE WHEN s.reason IS NULL AND NOT s.held THEN {variant} END, :t, s.occurred_at, "
        "s.occurred_at, md5(s.occurrence_key) FROM s"
    )
    return sql, params


# engine/triggers/after.py `reached`: a carrying action on its way, or with none, any.
_REACHING = "r.decision_id = o.id AND r.state IN ('planned', 'claimed', 'sent')"
_CARRYING = "channel IN ('email', 'sms', 'audience', 'webhook')"
HAND_REACHED = (
    f"(EXISTS (SELECT 1 FROM bench_hand_outbox r WHERE {_REACHING} AND r.{_CARRYING}) OR "
    f"(NOT EXISTS (SELECT 1 FROM bench_hand_outbox c WHERE c.decision_id = o.id AND c.{_CARRYING})"
    f" AND EXISTS (SELECT 1 FROM bench_hand_outbox r WHERE {_REACHING})))"
)


def hand_outbox_statements(compiled, dialect: str, install: str):
    """[(SQL text, parameters)]: the outbox rows of one rule's planned hand decisions,
    one INSERT ... SELECT per action and variant, as the engine writes them (same
    columns, idempotency key, consent filter and JSON payload)."""
    spec = compiled.spec
    if spec.status != "active":
        return []
    statements = []
    payload_sql = "CAST(:payload AS JSONB)" if dialect == "postgresql" else ":payload"
    for variant, plans in spec.actions.items():
        for action in plans:
            payload = {
                "rule": spec.rule_id,
                "variant": variant,
                "params": action.params,
                "send_window": {"between": list(spec.send_window)} if spec.send_window else None,
            }
            where = ["d.rule_id = :rule_id", "d.outcome = 'planned'"]
            params = {
                "rule_id": spec.rule_id,
                "key_prefix": f"{install}:{spec.rule_id}:",
                "key_suffix": f":{action.kind}",
                "kind": action.kind,
                "channel": action.channel,
                "priority": spec.priority,
                "payload": json.dumps(payload),
                "t": T,
            }
            if variant is not None:
                where.append("d.variant = :variant")
                params["variant"] = variant
            if action.channel in CONSENT:
                where.append(CONSENT[action.channel])
            sql = (
                "INSERT INTO bench_hand_outbox (idempotency_key, decision_id, run_id, rule_id, "
                "user_id, kind, channel, variant, priority, payload, state, attempts, "
                "next_attempt_at, created_at, updated_at) "
                "SELECT md5(CAST(:key_prefix AS VARCHAR) || d.user_id || ':' || "
                "coalesce(d.occurrence_ref, d.occurrence_key) || CAST(:key_suffix AS VARCHAR)), "
                "d.id, d.run_id, d.rule_id, d.user_id, CAST(:kind AS VARCHAR), "
                f"CAST(:channel AS VARCHAR), d.variant, :priority, {payload_sql}, 'planned', 0, "
                ":t, :t, :t FROM bench_hand d JOIN users u ON u.id = d.user_id "
                f"WHERE {' AND '.join(where)} ON CONFLICT (idempotency_key) DO NOTHING"
            )
            statements.append((sql, params))
    return statements


def _bind(params: dict, dialect: str) -> dict:
    """Datetimes as SQLite stores them (UTC text) or as aware values for PostgreSQL."""
    if dialect == "postgresql":
        return params
    return {
        key: value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        if isinstance(value, datetime)
        else value
        for key, value in params.items()
    }


# ---------------------------------------------------------------------------------------
# Measuring


SCRATCH_NAME = re.compile(r"plan_scratch_[0-9a-f]+")


class StatementTimer:
    """Time spent per rule in each kind of statement (SQLAlchemy cursor events)."""

    def __init__(self, engine: sa.Engine):
        self.current: str | None = None
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.selects: dict[str, tuple[str, object]] = {}
        self.occurrences: dict[str, tuple[str, object]] = {}
        # Time per statement shape (its first words), to find what dominates "other".
        self.shapes: dict[str, float] = defaultdict(float)
        self.engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = clock.monotonic()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        elapsed = clock.monotonic() - conn.info.pop("bench_started", clock.monotonic())
        if self.current is None:
            return
        head = statement.lstrip()[:40].upper()
        if head.startswith("INSERT INTO NUDGE_PLAN_SCRATCH"):
            kind = "select"
            self.selects[self.current] = (statement, parameters)
        elif head.startswith("INSERT INTO NUDGE_PLAN_OCCURRENCES"):
            # A follow-up's occurrences, written first (engine/planning/scratch.py):
            # part of its candidate query.
            kind = "select"
            self.occurrences[self.current] = (statement, parameters)
        elif head.startswith("INSERT INTO DECISIONS"):
            kind = "decisions"
        elif head.startswith("INSERT INTO OUTBOX"):
            kind = "outbox"
        else:
            kind = "other"
        self.seconds[self.current][kind] += elapsed
        shape = SCRATCH_NAME.sub("plan_scratch_*", " ".join(statement.split()))
        self.shapes[shape[:90]] += elapsed

    def slowest(self, count: int = 8) -> list[tuple[float, str]]:
        ranked = sorted(((round(t, 3), shape) for shape, t in self.shapes.items()), reverse=True)
        return ranked[:count]


def run_engine(store: Store, ruleset: RuleSet, at: datetime, timer: StatementTimer):
    """One real evaluation at `at`; per-rule wall times from a wrapper around plan_rule."""
    original = runner.plan_rule
    walls: dict[str, float] = {}

    def timed(connection, spec, **kwargs):
        timer.current = spec.rule_id
        started = clock.monotonic()
        try:
            return original(connection, spec, **kwargs)
        finally:
            walls[spec.rule_id] = clock.monotonic() - started
            timer.current = None

    runner.plan_rule = timed
    try:
        started = clock.monotonic()
        evaluation = runner.evaluate(store, ruleset, at=at)
        total = clock.monotonic() - started
    finally:
        runner.plan_rule = original
    return evaluation, walls, total


HAND_ANALYZE = (
    "ANALYZE bench_hand (rule_id, user_id, occurrence_key, outcome, occurred_at, decided_at), "
    "bench_hand_outbox (decision_id, state, channel)"
)


def run_hand(store: Store, ruleset: RuleSet) -> tuple[dict[str, float], float]:
    """Every rule that has a hand-written version, in the engine's evaluation order."""
    dialect = store.dialect
    chosen = runner.evaluation_order(ruleset.rules.values())
    with store.begin() as connection:
        HAND_METADATA.drop_all(connection)
        HAND_METADATA.create_all(connection)
        install = install_id(connection)
    walls: dict[str, float] = {}
    analysed = False
    started = clock.monotonic()
    for compiled in chosen:
        rule_id = compiled.spec.rule_id
        if rule_id not in HAND_RULES or compiled.spec.status == "paused":
            continue
        superiors = runner.superiors_of(compiled, chosen)
        sql, params = hand_statement(compiled, superiors, dialect, store.settings)
        rule_started = clock.monotonic()
        outbox_statements = hand_outbox_statements(compiled, dialect, install)
        with store.begin() as connection:
            if store.is_postgres and compiled.spec.trigger.kind == "after" and not analysed:
                # The followed rule's hand rows were just written to tables created for
                # the run: without statistics PostgreSQL plans the reach check as a
                # bitmap AND over every pending outbox row. Done once, on the columns
                # the follow-ups read, as the engine does (engine/planning/statistics.py),
                # and timed with the rule.
                connection.exec_driver_sql(HAND_ANALYZE)
                analysed = True
            connection.execute(sa.text(sql), _bind(params, dialect))
            for outbox_sql, outbox_params in outbox_statements:
                connection.execute(sa.text(outbox_sql), _bind(outbox_params, dialect))
        walls[rule_id] = clock.monotonic() - rule_started
    return walls, clock.monotonic() - started


def compare(store: Store, evaluation) -> dict[str, dict]:
    """Per rule: rows only the engine decided, rows only the hand SQL produced."""
    columns = "user_id, occurrence_key, outcome, coalesce(reason, '-'), coalesce(variant, '-')"
    engine_rows = f"SELECT {columns} FROM decisions WHERE run_id = :run_id"
    hand_rows = f"SELECT {columns} FROM bench_hand WHERE rule_id = :rule_id"
    result = {}
    with store.connect() as connection:
        for outcome in evaluation.outcomes:
            if outcome.rule_id not in HAND_RULES or outcome.run_id is None:
                continue
            params = {"run_id": outcome.run_id, "rule_id": outcome.rule_id}
            only_engine = connection.execute(
                sa.text(f"SELECT count(*) FROM ({engine_rows} EXCEPT {hand_rows}) AS x"), params
            ).scalar_one()
            only_hand = connection.execute(
                sa.text(f"SELECT count(*) FROM ({hand_rows} EXCEPT {engine_rows}) AS x"), params
            ).scalar_one()
            hand_count = connection.execute(
                sa.text("SELECT count(*) FROM bench_hand WHERE rule_id = :rule_id"), params
            ).scalar_one()
            engine_actions = connection.execute(
                sa.text("SELECT count(*) FROM outbox WHERE run_id = :run_id"), params
            ).scalar_one()
            hand_actions = connection.execute(
                sa.text("SELECT count(*) FROM bench_hand_outbox WHERE rule_id = :rule_id"), params
            ).scalar_one()
            result[outcome.rule_id] = {
                "only_engine": only_engine,
                "only_hand": only_hand,
                "hand_rows": hand_count,
                "engine_actions": engine_actions,
                "hand_actions": hand_actions,
            }
    return result


def _assert_rows(evaluation, equality: dict[str, dict]) -> None:
    """What was timed exists: every rule evaluated, the same decisions (user,
    occurrence, outcome, reason, variant) and the same number of outbox rows on both
    sides, and something written at all."""
    assert not evaluation.failed, [o.error for o in evaluation.outcomes if o.error]
    assert equality, "no rule was compared"
    for rule_id, counts in equality.items():
        assert not counts["only_engine"] and not counts["only_hand"], (rule_id, counts)
        assert counts["engine_actions"] == counts["hand_actions"], (rule_id, counts)
    assert sum(c["hand_rows"] for c in equality.values()) > 0, "nothing decided"
    assert sum(c["hand_actions"] for c in equality.values()) > 0, "no outbox row"


def reset_engine(store: Store) -> None:
    """Forget what the timed evaluation wrote (the seeded history stays), so the next
    repetition decides the same audiences again."""
    evaluated = "SELECT id FROM runs WHERE rule_hash <> 'bench-seed'"
    with store.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM outbox WHERE run_id IN ({evaluated})")
        connection.exec_driver_sql(f"DELETE FROM decisions WHERE run_id IN ({evaluated})")
        connection.exec_driver_sql("DELETE FROM runs WHERE rule_hash <> 'bench-seed'")
    if store.is_postgres:
        # The hand-written side writes into tables created afresh for each repetition;
        # the engine's would otherwise keep the deleted rows of the previous one as dead
        # tuples, whose index entries carry the very idempotency keys and decision keys
        # it is about to insert again (each insert then visits them). Vacuumed as
        # autovacuum would, not analysed (statistics stay as the run left them).
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM outbox, decisions, runs")


IDLE_PROBE = "SELECT 1 FROM events WHERE type = :type AND ingested_at > :since LIMIT 1"


def measure_idle_tick(store: Store, ruleset: RuleSet, repeats: int) -> dict:
    """The daemon's steady tick with nothing new: a full sweep at T + 20 min (past
    CHANGE_LAG after the load's ingest), then `repeats` ticks a minute apart with
    `changed_since`, each followed by the hand-written limit: as many indexed
    `SELECT 1 ... LIMIT 1` round trips as the tick issued statements."""
    from engine.daemon import CHANGE_LAG

    previous = T + timedelta(minutes=20)
    sweep = runner.evaluate(store, ruleset, at=previous)
    assert not sweep.failed, [o.error for o in sweep.outcomes if o.error]
    ticks, hands, statements, decided, entered = [], [], [], [], []
    probe = sa.text(IDLE_PROBE).bindparams(sa.bindparam("since", type_=UTCDateTime()))
    load_before = os.getloadavg()
    count: list[int] = []

    def listener(*_args) -> None:
        count.append(1)

    for _ in range(repeats):
        at = previous + timedelta(minutes=1)
        count.clear()
        sa.event.listen(store.engine, "before_cursor_execute", listener)
        started = clock.monotonic()
        tick = runner.evaluate(
            store, ruleset, at=at, mode="run", changed_since=previous - CHANGE_LAG
        )
        ticks.append(clock.monotonic() - started)
        sa.event.remove(store.engine, "before_cursor_execute", listener)
        assert not tick.failed, [o.error for o in tick.outcomes if o.error]
        assert len(tick.outcomes) == len(ruleset.rules), "every rule was evaluated"
        statements.append(len(count))
        decided.append(sum(o.matched for o in tick.outcomes))
        entered.append(sum(tick.stage_entries.values()))
        previous = at
        with store.connect() as connection:
            started = clock.monotonic()
            for _ in range(len(count)):
                connection.execute(probe, {"type": "purchase", "since": at}).first()
            hands.append(clock.monotonic() - started)
            connection.rollback()
    median_tick, median_hand = statistics.median(ticks), statistics.median(hands)
    return {
        "repeats": repeats,
        "tick_ms": {"min": _ms(min(ticks)), "median": _ms(median_tick)},
        "hand_ms": {"min": _ms(min(hands)), "median": _ms(median_hand)},
        "ratio": round(median_tick / median_hand, 1) if median_hand else None,
        "statements": max(statements),
        "decided": decided,
        "stage_entries": entered,
        "load_average": [load_before, os.getloadavg()],
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


WARM_UP = (
    ("users", "created_at"),
    ("profiles", "updated_at"),
    ("events", "ingested_at"),
    ("stage_memberships", "recorded_at"),
    ("decisions", "decided_at"),
    ("user_tags", "tag"),
)


def warm_up(store: Store) -> None:
    """Read every table once so neither contender pays for a cold cache."""
    with store.connect() as connection:
        for table, column in WARM_UP:
            # A test on an unindexed column makes both databases read the table itself.
            connection.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL")


def explain(
    store: Store, statement: str, parameters, analyze: bool = False, occurrences=None
) -> str:
    """The query plan; `analyze` (PostgreSQL, read-only statements) runs it for timings.
    `occurrences`: the (INSERT ... SELECT, parameters) that filled the follow-up
    occurrence table the statement reads; it is filled and analysed again first."""
    prefix = "EXPLAIN QUERY PLAN "
    if store.is_postgres:
        prefix = "EXPLAIN (ANALYZE) " if analyze else "EXPLAIN "
    with store.connect() as connection:
        if analyze and store.is_postgres:
            connection.exec_driver_sql("SET LOCAL jit = off")  # as the planner runs it
        if occurrences is not None:
            fill, fill_parameters = occurrences
            select = fill[fill.index(") SELECT") + 2 :]
            connection.exec_driver_sql(
                "CREATE TEMPORARY TABLE nudge_plan_occurrences AS " + select, fill_parameters
            )
            connection.exec_driver_sql("ANALYZE nudge_plan_occurrences")
        rows = connection.exec_driver_sql(prefix + statement, parameters).all()
        connection.rollback()
    if store.is_postgres:
        return "\n".join(row[0] for row in rows)
    return "\n".join(f"{row[1]:>4} {row[2]:>4} {row[3]}" for row in rows)


# ---------------------------------------------------------------------------------------
# One backend end to end


def bench_backend(url: str, args, rules_dir: Path, project: Path) -> dict:
    settings = Settings(
        shop=ShopSettings(name="Bench Shop", timezone=SHOP_TZ),
        database=DatabaseSettings(url=url),
        rules=RulesSettings(folder=str(rules_dir)),
        project_dir=project,
    )
    store = Store(engine=create_engine_for(url), settings=settings)
    result: dict = {"load_average_before": os.getloadavg()}
    try:
        upgrade(store)
        load, history = load_shop(store, args.users, args.events, args.seed)
        result["load"] = {k: round(v, 1) if isinstance(v, float) else v for k, v in load.items()}
        result["seeded_decisions"] = {k: len(v) for k, v in history.decisions.items()}
        ruleset = load_ruleset(settings)
        if ruleset.errors:
            raise SystemExit("\n".join(str(d) for d in ruleset.errors))
        warm_up(store)
        # Interleaved repetitions: hand-written SQL, then the engine, then both are
        # checked row for row and forgotten, so each repetition does the same work.
        hand_totals, engine_totals = [], []
        hand_rule_walls: dict[str, list[float]] = defaultdict(list)
        engine_rule_walls: dict[str, list[float]] = defaultdict(list)
        result["repetitions"] = []
        for repetition in range(args.repeats):
            if repetition:
                reset_engine(store)
            load_average = os.getloadavg()
            hand_walls, hand_total = run_hand(store, ruleset)
            timer = StatementTimer(store.engine)
            evaluation, engine_walls, engine_total = run_engine(store, ruleset, T, timer)
            timer.close()
            equality = compare(store, evaluation)
            _assert_rows(evaluation, equality)
            hand_totals.append(hand_total)
            engine_totals.append(engine_total)
            for rule_id, wall in hand_walls.items():
                hand_rule_walls[rule_id].append(wall)
            for rule_id, wall in engine_walls.items():
                engine_rule_walls[rule_id].append(wall)
            result["repetitions"].append(
                {
                    "engine_s": round(engine_total, 3),
                    "hand_s": round(hand_total, 3),
                    "ratio": round(engine_total / hand_total, 2),
                    "load_average": load_average,
                }
            )
        hand_walls = {k: statistics.median(v) for k, v in hand_rule_walls.items()}
        engine_walls = {k: statistics.median(v) for k, v in engine_rule_walls.items()}
        hand_total, engine_total = statistics.median(hand_totals), statistics.median(engine_totals)
        result["idle_tick"] = measure_idle_tick(store, ruleset, args.repeats)
        result["slowest_statements"] = {"run": timer.slowest()}
        result["rules"] = []
        for outcome in evaluation.outcomes:
            rule_id = outcome.rule_id
            phases = timer.seconds.get(rule_id, {})
            result["rules"].append(
                {
                    "rule": rule_id,
                    "trigger": ruleset.rules[rule_id].spec.trigger.kind,
                    "status": outcome.status,
                    "matched": outcome.matched,
                    "planned": outcome.planned,
                    "held_out": outcome.held_out,
                    "shadow": outcome.shadow,
                    "suppressed": sum(outcome.suppressed.values()),
                    "engine_s": round(engine_walls.get(rule_id, 0.0), 3),
                    "engine_select_s": round(phases.get("select", 0.0), 3),
                    "engine_write_s": round(
                        phases.get("decisions", 0.0) + phases.get("outbox", 0.0), 3
                    ),
                    "hand_s": round(hand_walls[rule_id], 3) if rule_id in hand_walls else None,
                    "same_rows": equality.get(rule_id),
                }
            )
        covered = [r for r in result["rules"] if r["hand_s"] is not None]
        engine_covered = sum(r["engine_s"] for r in covered)
        hand_covered = sum(r["hand_s"] for r in covered)
        result["totals"] = {
            "engine_evaluate_s": round(engine_total, 2),
            "engine_rules_s": round(sum(engine_walls.values()), 2),
            "engine_stage_refresh_and_overhead_s": round(
                engine_total - sum(engine_walls.values()), 2
            ),
            "hand_s": round(hand_total, 2),
            "ratio_evaluate_vs_hand": round(engine_total / hand_total, 2) if hand_total else None,
            "ratio_rules_vs_hand": round(engine_covered / hand_covered, 2)
            if hand_covered
            else None,
            "engine_evaluate_min_s": round(min(engine_totals), 2),
            "hand_min_s": round(min(hand_totals), 2),
            "all_equal": all(
                not e["only_engine"] and not e["only_hand"] for e in equality.values()
            ),
        }
        if args.explain:
            result["explain"] = {}
            for rule_id in args.explain:
                entry = {}
                occurrences = timer.occurrences.get(rule_id)
                if occurrences is not None:
                    statement, parameters = occurrences
                    select = statement[statement.index(") SELECT") + 2 :]
                    entry["engine occurrences"] = explain(store, select, parameters, analyze=True)
                if rule_id in timer.selects:
                    statement, parameters = timer.selects[rule_id]
                    select = statement[statement.index(") SELECT") + 2 :]
                    entry["engine"] = explain(
                        store, select, parameters, analyze=True, occurrences=occurrences
                    )
                compiled = ruleset.rules.get(rule_id)
                if compiled is not None and rule_id in HAND_RULES:
                    chosen = runner.evaluation_order(ruleset.rules.values())
                    sql, params = hand_statement(
                        compiled, runner.superiors_of(compiled, chosen), store.dialect, settings
                    )
                    compiled_sql = sa.text(sql).compile(dialect=store.engine.dialect)
                    bound = _bind(params, store.dialect)
                    if store.is_postgres:
                        entry["hand"] = explain(store, str(compiled_sql), bound)
                    else:
                        ordered = tuple(bound[name] for name in compiled_sql.positiontup)
                        entry["hand"] = explain(store, str(compiled_sql), ordered)
                result["explain"][rule_id] = entry
    finally:
        result["load_average_after"] = os.getloadavg()
        store.dispose()
    return result


def bench_postgres(server_url: str, args, rules_dir: Path, project: Path) -> dict:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"nudge_bench_eval_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        return bench_backend(url, args, rules_dir, project)
    finally:
        if args.keep:
            print(f"kept PostgreSQL database {name}", file=sys.stderr)
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# ---------------------------------------------------------------------------------------
# Output


def render(results: dict) -> str:
    lines = [
        f"{results['date']}  {results['machine']}  users={results['users']:,} "
        f"events={results['events']:,}  T={T.isoformat()}"
    ]
    for backend in ("sqlite", "postgresql"):
        data = results.get(backend)
        if data is None:
            continue
        lines += ["", f"== {backend} ==", f"load: {data['load']}"]
        lines.append(
            "load average before/after: "
            + " / ".join(
                ", ".join(f"{x:.1f}" for x in data[k])
                for k in ("load_average_before", "load_average_after")
            )  # fmt: skip
        )
        header = (
            f"{'rule':<32} {'trigger':<8} {'matched':>8} {'planned':>8} {'held':>6} "
            f"{'suppr':>7} {'engine s':>9} {'(select)':>9} {'(write)':>8} {'hand s':>8} "
            f"{'ratio':>6} {'same':>5}"
        )
        lines += [header, "-" * len(header)]
        for row in data["rules"]:
            same = row["same_rows"]
            equal = "-" if same is None else (
                "yes" if not same["only_engine"] and not same["only_hand"] else "NO")  # fmt: skip
            hand = row["hand_s"]
            ratio = f"{row['engine_s'] / hand:.2f}" if hand else "-"
            lines.append(
                f"{row['rule']:<32} {row['trigger']:<8} {row['matched']:>8,} "
                f"{row['planned'] + row['shadow']:>8,} {row['held_out']:>6,} "
                f"{row['suppressed']:>7,} {row['engine_s']:>9.3f} {row['engine_select_s']:>9.3f} "
                f"{row['engine_write_s']:>8.3f} {hand if hand is not None else '-':>8} "
                f"{ratio:>6} {equal:>5}"
            )
        totals, idle = data["totals"], data["idle_tick"]
        lines += [
            "",
            f"engine evaluate(T) wall:        {totals['engine_evaluate_s']:>8.2f} s "
            f"(rules {totals['engine_rules_s']:.2f} s + stage refresh and overhead "
            f"{totals['engine_stage_refresh_and_overhead_s']:.2f} s)",
            f"hand-written SQL, all rules:    {totals['hand_s']:>8.2f} s",
            f"ratio engine / hand:            {totals['ratio_evaluate_vs_hand']:>8} "
            f"(rules only: {totals['ratio_rules_vs_hand']}; target <= 1.25)",
            f"  (medians of {len(data['repetitions'])} interleaved repetitions; minima "
            f"engine {totals['engine_evaluate_min_s']:.2f} s, hand {totals['hand_min_s']:.2f} s; "
            f"each: {[(r['engine_s'], r['hand_s']) for r in data['repetitions']]})",
            f"idle tick (steady, nothing new): median {idle['tick_ms']['median']} ms (min "
            f"{idle['tick_ms']['min']}); hand-written limit ({idle['statements']} indexed "
            f"round trips) median {idle['hand_ms']['median']} ms; ratio {idle['ratio']}x; "
            f"matched {idle['decided']}, stage entries {idle['stage_entries']}",
            f"same rows as hand-written SQL:  {'yes' if totals['all_equal'] else 'NO'}",
        ]
        for phase, ranked in data.get("slowest_statements", {}).items():
            lines += ["", f"slowest statement shapes ({phase}, summed over rules):"]
            lines += [f"  {seconds:8.3f} s  {shape}" for seconds, shape in ranked]
        for rule_id, plans in data.get("explain", {}).items():
            for who, plan in plans.items():
                lines += ["", f"-- plan of {rule_id} ({who}):", plan]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--rules-dir", type=Path, help="rules to use (default: shipped + synthetic)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--explain", action="append", metavar="RULE", help="print query plans")
    parser.add_argument("--keep", action="store_true", help="keep the databases (debugging)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    server = os.environ.get("NUDGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    results: dict = {
        "date": clock.utcnow().date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "users": args.users,
        "events": args.events,
    }
    folder = Path(tempfile.mkdtemp(prefix="nudge-bench-eval-"))
    try:
        rules_dir = args.rules_dir.resolve() if args.rules_dir else folder / "rules"
        if args.rules_dir is None:
            rules_dir.mkdir()
            write_rules(rules_dir)
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{folder}/bench.db"
            results["sqlite"] = bench_backend(url, args, rules_dir, folder)
        if args.backend in ("postgresql", "both"):
            results["postgresql"] = bench_postgres(server, args, rules_dir, folder)
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str) if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
