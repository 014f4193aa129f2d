"""A deterministic synthetic shop for `nudge demo`: users and events as JSONL files.

The same seed and `now` give byte-identical files. The shop sells in CNY from
Asia/Shanghai; about 5,000 shoppers arrive over the 180 days before `now` and walk a
believable funnel (visits -> signup -> first purchase -> repeat purchases), some go
quiet and lapse, and a small cohort of long-standing members (signed up long before
the window) supplies the lapsed and churned stages, so every stage is populated.
The files are ingested through the ordinary ingest path (`engine.ingest`).

History is seeded before the rules run, so it cannot show what a rule did. The demo's
story is told afterwards: `build_demo` gives one example rule a control group
(`DEMO_HOLDOUTS`), and once the demo's tick has planned and delivered,
`simulate_responses` (`nudge demo --respond`) has the shoppers answer: purchases,
ingested through the same path, with a higher chance for the treated users of
`first-purchase-thank-you` than for its held-out ones (a real effect) and the same
chance for both groups of `winback-lapsed-members` (no effect), some paid with the
rule's coupon code. `nudge report` then measures both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from engine.clock import ensure_aware

DEMO_FOLDER = "demo-data"
USERS_FILE = "users.jsonl"
EVENTS_FILE = "events.jsonl"
WINDOW_DAYS = 180
SHOP_ZONE = ZoneInfo("Asia/Shanghai")
MOBILE_PREFIXES = (
    tuple(f"13{d}" for d in range(10))
    + ("150", "151", "152", "153", "155", "156", "157", "158", "159")
    + tuple(f"18{d}" for d in range(10))
)
DAY = timedelta(days=1)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玲红梅鑫婷雪琳晨宇浩然子轩欣怡"
FIRST_NAMES = (
    "Emma Olivia Ava Sophia Mia Amelia Grace Chloe Lucy Hannah "
    "James Liam Noah Lucas Oliver Ethan Henry Jack Leo Daniel"
).split()
LAST_NAMES = "Smith Johnson Brown Taylor Wilson Davies Evans Clark Lewis Walker Young King".split()
# Where the English-speaking minority lives: (country, time zone), weighted.
ABROAD = [("US", "America/Los_Angeles"), ("GB", "Europe/London"), ("SG", "Asia/Singapore")]
UTM = [  # (source, medium, campaign), weighted towards the channels Chinese shops use
    ("wechat", "social", "spring-new-arrivals"),
    ("douyin", "video", "livestream-618"),
    ("xiaohongshu", "social", "kol-seeding"),
    ("baidu", "cpc", "brand-search"),
    ("google", "cpc", "brand-search-intl"),
    ("newsletter", "email", "weekly-picks"),
]
UTM_WEIGHTS = [30, 20, 15, 15, 5, 5]
COUPONS = ["WELCOME20", "SPRING30", "VIP50", "FREESHIP"]
TIERS = [(5000, "platinum"), (2000, "gold"), (500, "silver"), (0, "bronze")]


@dataclass(frozen=True)
class DemoFiles:
    """What `write_demo_files` produced."""

    users_path: Path
    events_path: Path
    users: int
    events: int


@dataclass
class _Shopper:
    """One generated user and their events, before serialisation."""

    user: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


class _ShopStory:
    """Draws one shopper at a time from one seeded random generator."""

    def __init__(self, seed: int, now: datetime, zone: ZoneInfo):
        self.rng = random.Random(seed)
        self.now = ensure_aware(now)
        self.zone = zone

    def stamp(self, at: datetime) -> str:
        # Shop-local wall time with its offset, to the second, as shop exports look.
        return at.astimezone(self.zone).isoformat(timespec="seconds")

    def shopper(self, index: int) -> _Shopper:
        rng = self.rng
        user_id = f"u{index:05d}"
        legacy = rng.random() < 0.07
        if legacy:
            # Members from before the window: most have gone quiet long ago.
            first_seen = self.now - rng.uniform(200, 900) * DAY
        else:
            # More recent arrivals than old ones: the shop is growing.
            first_seen = self.now - WINDOW_DAYS * DAY * rng.random() ** 1.3
        first_seen = min(first_seen, self.now - timedelta(minutes=5))
        chinese = rng.random() < 0.78
        shopper = _Shopper(user=self._person(user_id, index, chinese))
        signs_up = legacy or rng.random() < 0.45
        events = shopper.events
        utm = rng.choices(UTM, UTM_WEIGHTS)[0] if rng.random() < 0.6 else None
        self._visit(events, first_seen, utm)
        signup_at = None
        if signs_up:
            delay = (
                timedelta(minutes=rng.uniform(2, 40))
                if rng.random() < 0.7
                else rng.uniform(0, 20) * DAY
            )
            signup_at = min(first_seen + delay, self.now)
            if not legacy:  # legacy members came from the CRM, without a signup event
                events.append({"type": "signup", "at": signup_at})
        spent = self._purchases(events, user_id, first_seen, signup_at, legacy)
        self._browsing(events, first_seen)
        self._member_fields(shopper.user, signup_at, spent, chinese)
        self._consent(shopper, signup_at)
        # Stable ids make a re-import of the same files store each event once.
        shopper.events = [
            {"event_id": f"{user_id}-{number:03d}", "user": user_id, **event}
            for number, event in enumerate(sorted(events, key=lambda e: e["at"]), start=1)
        ]
        return shopper

    def _person(self, user_id: str, index: int, chinese: bool) -> dict[str, Any]:
        rng = self.rng
        if chinese:
            name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2, 2))))
            country, zone, locale = "CN", "Asia/Shanghai", "zh-CN"
            email = f"user{index:05d}@example.cn"
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name = f"{first} {last}"
            # Most English speakers shop from China too; some from abroad.
            country, zone = ("CN", "Asia/Shanghai") if rng.random() < 0.5 else rng.choice(ABROAD)
            locale = "en"
            email = f"{first.lower()}.{last.lower()}{index}@example.com"
        return {
            "id": user_id,
            "name": name,
            "email": email,
            "phone": None,
            "country": country,
            "timezone": zone,
            "locale": locale,
        }

    def _visit(self, events: list, at: datetime, utm: tuple | None = None) -> None:
        event: dict[str, Any] = {"type": "visit", "at": at}
        if utm:
            event |= dict(zip(("utm_source", "utm_medium", "utm_campaign"), utm, strict=True))
        event["properties"] = {"page": self.rng.choice(["/", "/new", "/sale", "/p/tea-set"])}
        events.append(event)

    def _purchases(
        self,
        events: list,
        user_id: str,
        first_seen: datetime,
        signup_at: datetime | None,
        legacy: bool,
    ) -> float:
        rng = self.rng
        if signup_at is not None:
            buys = rng.random() < (0.8 if legacy else 0.55)
            start = signup_at
        else:
            buys = rng.random() < 0.07  # guest checkout
            start = first_seen
        if not buys:
            return 0.0
        whale = rng.random() < 0.05
        # Legacy members stop buying at some point; their activity ends long ago.
        active_until = (
            min(self.now, start + rng.uniform(20, 400) * DAY)
            if legacy and rng.random() < 0.75
            else self.now
        )
        at = start + rng.expovariate(1 / 6) * DAY
        spent = 0.0
        order = 0
        keep_buying = 0.7 if whale else 0.42
        while at <= active_until:
            order += 1
            amount = round(rng.lognormvariate(5.3, 0.6) * (8 if whale else 1)) + 0.9
            spent += amount
            self._visit(events, at - timedelta(minutes=rng.uniform(3, 30)))
            order_id = f"o{user_id[1:]}-{order}"
            purchase: dict[str, Any] = {
                "type": "purchase",
                "at": at,
                "amount": f"{amount:.2f}",
                "currency": "CNY",
                "order_id": order_id,
                "properties": {"items": rng.choice((1, 1, 1, 2, 2, 3))},
            }
            if rng.random() < 0.18:
                code = rng.choice(COUPONS)
                purchase["coupon_code"] = code
                events.append({"type": "coupon_redeemed", "at": at, "coupon_code": code})
            events.append(purchase)
            if rng.random() < 0.04:
                refund_at = at + rng.uniform(1, 10) * DAY
                if refund_at <= self.now:
                    share = 1.0 if rng.random() < 0.6 else 0.5
                    refunded = round(amount * share, 2)
                    spent -= refunded
                    events.append(
                        {
                            "type": "refund",
                            "at": refund_at,
                            "amount": f"{refunded:.2f}",
                            "currency": "CNY",
                            "order_id": order_id,
                        }
                    )
            if rng.random() > keep_buying:
                break
            at += rng.expovariate(1 / 28) * DAY + timedelta(hours=2)
        return spent

    def _browsing(self, events: list, first_seen: datetime) -> None:
        """Return visits in between, the long tail of a shop's traffic."""
        rng = self.rng
        for _ in range(int(rng.expovariate(1 / 2))):
            at = first_seen + (self.now - first_seen) * rng.random()
            self._visit(events, at)

    def _member_fields(
        self, user: dict, signup_at: datetime | None, spent: float, chinese: bool
    ) -> None:
        rng = self.rng
        user["member_since"] = signup_at
        if signup_at is None:
            user["member_tier"] = None
        else:
            tier = next(name for floor, name in TIERS if spent >= floor)
            # Tiers follow spend, with the odd upgrade a shop grants by hand.
            upgraded = tier == "gold" and rng.random() < 0.1
            user["member_tier"] = "platinum" if upgraded else tier
            if chinese and rng.random() < 0.6:
                # Real mainland mobile ranges (13x, 15x, 18x): a made-up prefix such
                # as 14x would be an invalid number that SMS and ad exports refuse.
                # (Two draws, as the demo always made: the rest of the shop stays the same.)
                rng.choice("3456789")
                draw = rng.randrange(10**9)
                prefix = MOBILE_PREFIXES[draw % len(MOBILE_PREFIXES)]
                user["phone"] = prefix + f"{draw // len(MOBILE_PREFIXES) % 10**8:08d}"
        tags = []
        if rng.random() < 0.2:
            tags.append("wechat-follower")
        if rng.random() < 0.02:
            tags.append("wholesale")
        user["tags"] = tags
        user["attributes"] = {"gender": rng.choice(["f", "f", "f", "m", "m", "unknown"])}

    def _consent(self, shopper: _Shopper, signup_at: datetime | None) -> None:
        rng = self.rng
        user = shopper.user
        member = signup_at is not None
        user["email_opt_in"] = rng.random() < (0.72 if member else 0.1)
        user["sms_opt_in"] = user["phone"] is not None and rng.random() < 0.5
        user["ads_opt_in"] = rng.random() < (0.6 if member else 0.3)
        user["unsubscribed_at"] = None
        if user["email_opt_in"] and signup_at is not None:
            opened = signup_at + rng.uniform(1, 30) * DAY
            if opened <= self.now:
                shopper.events.append({"type": "email_open", "at": opened})
                if rng.random() < 0.3:
                    shopper.events.append({"type": "email_click", "at": opened})
            if rng.random() < 0.05:
                left = signup_at + rng.uniform(1, 60) * DAY
                if left <= self.now:
                    user["email_opt_in"] = False
                    user["unsubscribed_at"] = left
                    shopper.events.append({"type": "unsubscribe", "at": left})

    def serialise(self, record: dict[str, Any]) -> str:
        clean = {
            key: self.stamp(value) if isinstance(value, datetime) else value
            for key, value in record.items()
            if value is not None and value != []
        }
        return json.dumps(clean, ensure_ascii=False, separators=(",", ":"))


def generate_shoppers(
    *, now: datetime, users: int = 5000, seed: int = 7, zone: ZoneInfo = SHOP_ZONE
) -> Iterator[tuple[str, list[str]]]:
    """Yield (user JSON line, event JSON lines) per shopper, deterministically."""
    story = _ShopStory(seed, now, zone)
    for index in range(1, users + 1):
        shopper = story.shopper(index)
        yield story.serialise(shopper.user), [story.serialise(e) for e in shopper.events]


def write_demo_files(
    folder: Path,
    *,
    now: datetime,
    users: int = 5000,
    seed: int = 7,
    zone: ZoneInfo = SHOP_ZONE,
) -> DemoFiles:
    """Write users.jsonl and events.jsonl into `folder`, streaming (flat memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    users_path, events_path = folder / USERS_FILE, folder / EVENTS_FILE
    user_count = event_count = 0
    with (
        users_path.open("w", encoding="utf-8") as users_out,
        events_path.open("w", encoding="utf-8") as events_out,
    ):
        for user_line, event_lines in generate_shoppers(now=now, users=users, seed=seed, zone=zone):
            users_out.write(user_line + "\n")
            user_count += 1
            for line in event_lines:
                events_out.write(line + "\n")
            event_count += len(event_lines)
    return DemoFiles(users_path, events_path, user_count, event_count)


@dataclass(frozen=True)
class DemoResult:
    """What `build_demo` did: files written, ingest report, stage entries, KPIs, and
    the rules given a demo holdout."""

    files: DemoFiles
    ingest: Any  # engine.ingest.IngestReport
    stages: Any  # engine.lifecycle.StageRefresh
    stats: dict[str, Any]
    holdouts: dict[str, str] = field(default_factory=dict)  # rule id -> holdout added

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": {
                "users": str(self.files.users_path),
                "events": str(self.files.events_path),
                "user_count": self.files.users,
                "event_count": self.files.events,
            },
            "ingest": self.ingest.as_dict(),
            "stage_entries": dict(sorted(self.stages.entered.items())),
            "stats": self.stats,
            "holdouts": self.holdouts,
        }


def build_demo(
    store,
    *,
    now: datetime,
    users: int = 5000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Generate the demo shop, ingest it, record stages, and compute the KPIs at `now`;
    give the rules of `DEMO_HOLDOUTS` found in the project without an experiment a
    control group (`add_demo_holdouts`).

    Refuses a store that already holds users: the demo belongs in a fresh project.
    """
    import sqlalchemy as sa

    from engine.errors import NudgeError
    from engine.ingest import ingest_files
    from engine.lifecycle import refresh_stages, users_table
    from engine.stats import shop_stats

    settings = store.settings
    with store.connect() as connection:
        existing = connection.execute(sa.select(sa.func.count()).select_from(users_table))
        count = existing.scalar_one()
    if count:
        raise NudgeError(
            f"the store already holds {count} users; run `nudge demo` in a fresh project "
            "(nudge init demo-shop && cd demo-shop)"
        )
    files = write_demo_files(
        settings.project_dir / DEMO_FOLDER, now=now, users=users, seed=seed, zone=settings.tz
    )
    report = ingest_files(store, [files.users_path, files.events_path], now=now, progress=progress)
    with store.begin() as connection:
        stages = refresh_stages(connection, settings, now)
    with store.connect() as connection:
        stats = shop_stats(connection, settings, now)
    holdouts = add_demo_holdouts(settings.rules_dir)
    return DemoResult(files=files, ingest=report, stages=stages, stats=stats, holdouts=holdouts)


# ---------------------------------------------------------------- the story: responses

# Rule -> the holdout the demo gives it when its file has no `experiment` yet: without
# a control group there is no lift to measure. Its rule tests still pass (their users'
# buckets are above 30%).
DEMO_HOLDOUTS = {"first-purchase-thank-you": "30%"}
HOLDOUT_NOTE = "# Added by `nudge demo`: a control group, so `nudge report` can measure the lift."


def add_demo_holdouts(rules_dir: Path) -> dict[str, str]:
    """Append `experiment: {holdout: ...}` to the DEMO_HOLDOUTS rules of `rules_dir`
    that exist and have no `experiment`; returns rule id -> holdout of those changed."""
    from ruamel.yaml import YAML

    added = {}
    for rule_id, holdout in DEMO_HOLDOUTS.items():
        path = rules_dir / f"{rule_id}.yaml"
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        data = YAML(typ="safe").load(text)
        if not isinstance(data, dict) or "experiment" in data:
            continue
        ending = "" if text.endswith("\n") else "\n"
        path.write_text(
            f"{text}{ending}{HOLDOUT_NOTE}\nexperiment:\n  holdout: {holdout}\n", encoding="utf-8"
        )
        added[rule_id] = holdout
    return added


@dataclass(frozen=True)
class Response:
    """How shoppers answer one rule: the chance that a user buys within RESPONSE_PERIOD
    of the rule's message (treated) or of the decision (held out: the control group's
    exposure, as attribution measures it), and the share of treated buyers who pay with
    the rule's coupon code."""

    treated: float
    control: float
    coupon_use: float = 0.0


RESPONSES = {
    # The thank-you coupon brings first-time buyers back: a real effect.
    "first-purchase-thank-you": Response(treated=0.25, control=0.08, coupon_use=0.6),
    # Lapsed members come back as often whether won back or not: no effect.
    "winback-lapsed-members": Response(treated=0.20, control=0.20, coupon_use=0.5),
}
RESPONSE_PERIOD = timedelta(days=5)  # within every rule's attribution window (7d)
RESPONSE_LOOKBACK = timedelta(days=30)  # decisions exposed this long before now are answered
RESPONSES_FILE = "responses.jsonl"


@dataclass
class ResponseCounts:
    """One group of one rule: decisions answered, users who bought, buyers with the code."""

    decisions: int = 0
    buyers: int = 0
    with_code: int = 0

    @property
    def rate(self) -> float | None:
        return self.buyers / self.decisions if self.decisions else None


@dataclass
class ResponsesResult:
    """What `simulate_responses` did, per rule and group (treated, control)."""

    now: datetime
    path: Path
    rules: dict[str, dict[str, ResponseCounts]]
    too_recent: int  # decisions of the RESPONSES rules not exposed RESPONSE_PERIOD before now
    ingest: Any  # engine.ingest.IngestReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "file": str(self.path),
            "rules": {
                rule: {group: vars(counts).copy() for group, counts in groups.items()}
                for rule, groups in self.rules.items()
            },
            "too_recent": self.too_recent,
            "ingest": self.ingest.as_dict(),
        }


def simulate_responses(store, settings=None, *, now: datetime, seed: int = 7) -> ResponsesResult:
    """The shoppers' answer to the demo's tick, as purchases through the ingest path.

    For each decision of a RESPONSES rule that was exposed (treated: its first action
    sent; control: decided, engine/measurement/attribution.py) between RESPONSE_LOOKBACK
    and RESPONSE_PERIOD before `now`, the user buys with the group's chance within
    RESPONSE_PERIOD of the exposure, a visit a few minutes before; some treated buyers
    pay with the decision's coupon code (redeemed by ingest). Each decision's draws come
    from its own generator seeded with (seed, rule, user): the same answers whatever the
    database or the order. Writes demo-data/responses.jsonl streaming, then ingests it
    at `now`; running it again stores nothing twice (stable event ids).
    """
    import sqlalchemy as sa

    from engine.ingest import ingest_files
    from engine.measurement.attribution import Windows, exposures, sql_instant
    from engine.store.delivery import Coupon
    from engine.store.planning import Decision, OutboxAction

    settings = settings or store.settings
    now = ensure_aware(now)
    cutoff = now - RESPONSE_PERIOD
    exposed = exposures(until=now, not_before=now - RESPONSE_LOOKBACK, windows=Windows({}))
    outbox, coupons = OutboxAction.__table__, Coupon.__table__
    coupon_action = (
        sa.select(outbox.c.decision_id, coupons.c.code, coupons.c.min_order)
        .join(coupons, coupons.c.idempotency_key == outbox.c.idempotency_key)
        .where(outbox.c.channel == "coupon", coupons.c.voided_at.is_(None))
        .subquery("coupon_action")
    )
    rules = sorted(RESPONSES)
    answered = (
        sa.select(
            exposed.c.decision_id,
            exposed.c.rule_id,
            exposed.c.user_id,
            exposed.c.outcome,
            exposed.c.exposure_at,
            coupon_action.c.code,
            coupon_action.c.min_order,
        )
        .select_from(
            exposed.outerjoin(coupon_action, coupon_action.c.decision_id == exposed.c.decision_id)
        )
        .where(exposed.c.rule_id.in_(rules), exposed.c.exposure_at <= sql_instant(cutoff))
    )
    decisions = Decision.__table__
    waiting = sa.select(sa.func.count()).where(
        decisions.c.rule_id.in_(rules),
        decisions.c.outcome.in_(("planned", "held_out")),
        decisions.c.decided_at >= sql_instant(now - RESPONSE_LOOKBACK),
        decisions.c.decided_at <= sql_instant(now),
        decisions.c.id.not_in(answered.with_only_columns(exposed.c.decision_id)),
    )
    query = answered.order_by(exposed.c.rule_id, exposed.c.user_id, exposed.c.decision_id)
    story = _ShopStory(seed, now, settings.tz)
    counts = {rule: {"treated": ResponseCounts(), "control": ResponseCounts()} for rule in rules}
    folder = settings.project_dir / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESPONSES_FILE
    with store.read() as connection, path.open("w", encoding="utf-8") as out:
        too_recent = connection.execute(waiting).scalar_one()
        rows = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
        for row in rows.mappings():
            group = "treated" if row["outcome"] == "planned" else "control"
            tally = counts[row["rule_id"]][group]
            tally.decisions += 1
            events = _response(story, row, RESPONSES[row["rule_id"]], group, seed)
            if not events:
                continue
            tally.buyers += 1
            tally.with_code += any("coupon_code" in event for event in events)
            for event in events:
                out.write(story.serialise(event) + "\n")
    report = ingest_files(
        store,
        [path],
        now=now,
        kind="events",
        rejects_path=path.with_name(path.name + ".rejects.jsonl"),
    )
    return ResponsesResult(now=now, path=path, rules=counts, too_recent=too_recent, ingest=report)


def _response(story: _ShopStory, row, response: Response, group: str, seed: int) -> list[dict]:
    """The events of one decision's user: none, or a visit and a purchase (with the
    coupon code and its coupon_redeemed event when they use it)."""
    user, decision = row["user_id"], row["decision_id"]
    rng = random.Random(f"{seed}:{row['rule_id']}:{user}")
    # Every draw is made whatever the outcome, so each decision's answer stands alone.
    buys = rng.random() < (response.treated if group == "treated" else response.control)
    delay = min(rng.expovariate(1 / 1.5), 4.9) * DAY + timedelta(minutes=rng.uniform(10, 60))
    amount = round(rng.lognormvariate(5.3, 0.6)) + 0.9
    uses_code = rng.random() < response.coupon_use
    items = rng.choice((1, 1, 1, 2, 2, 3))
    browse = timedelta(minutes=rng.uniform(3, 30))
    if not buys:
        return []
    at = ensure_aware(row["exposure_at"]) + delay
    code = row["code"] if group == "treated" and uses_code else None
    if code and row["min_order"] is not None:
        amount = max(amount, float(row["min_order"]) + 0.9)
    prefix = f"{user}-r{decision}"
    purchase = {
        "event_id": f"{prefix}-2",
        "user": user,
        "type": "purchase",
        "at": at,
        "amount": f"{amount:.2f}",
        "currency": "CNY",
        "order_id": f"o{user[1:]}-r{decision}",
        "properties": {"items": items},
    }
    visit = {"event_id": f"{prefix}-1", "user": user, "type": "visit", "at": at - browse}
    events = [visit, purchase]
    if code:
        purchase["coupon_code"] = code
        redeemed = {"event_id": f"{prefix}-3", "user": user, "type": "coupon_redeemed"}
        events.append(redeemed | {"at": at, "coupon_code": code})
    return events
