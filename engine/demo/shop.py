"""The synthetic shop: shoppers walking a believable funnel over 180 days, written as
JSONL files (the same seed and `now` give byte-identical files)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
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
class Shopper:
    """One generated user and their events, before serialisation."""

    user: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


class ShopStory:
    """Draws one shopper at a time from one seeded random generator."""

    def __init__(self, seed: int, now: datetime, zone: ZoneInfo):
        self.rng = random.Random(seed)
        self.now = ensure_aware(now)
        self.zone = zone

    def stamp(self, at: datetime) -> str:
        # Shop-local wall time with its offset, to the second, as shop exports look.
        return at.astimezone(self.zone).isoformat(timespec="seconds")

    def shopper(self, index: int) -> Shopper:
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
        shopper = Shopper(user=self._person(user_id, index, chinese))
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

    def _consent(self, shopper: Shopper, signup_at: datetime | None) -> None:
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
    story = ShopStory(seed, now, zone)
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
