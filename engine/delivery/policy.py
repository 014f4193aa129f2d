"""Delivery policies: middleware run around every action before a channel sees it.

Policies are checked in order for each claimed action, highest priority first; the
first that returns an Outcome decides (skip or defer) and the action is not
delivered. Order matters: consent first (a user without consent is skipped, not
deferred), then the rule (engine.delivery.rule_policy), then the send window (a
deferred message must not use up a cap slot), then frequency caps. The order is
configurable by name (`[delivery] policies`, engine.delivery.middleware).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.action_kinds import ACTION_KINDS
from engine.delivery.claims import held_by
from engine.delivery.config import SendWindow
from engine.delivery.context import DeliveryContext, Outcome, PlannedAction
from engine.localtime import first_instant_at_or_after, zone_named
from engine.store.planning import OutboxAction
from engine.store.sql import among

outbox = OutboxAction.__table__


class DeliveryPolicy:
    """Base class; subclasses override what they need (dramatiq middleware style)."""

    name = "policy"

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        """Load what the checks need for `actions`, in set-based queries.

        Called before each sub-batch of a claimed batch (engine.delivery.dispatcher), just
        before it is sent, so what it reads is seconds old when the messages leave. The
        outcomes of earlier sub-batches of the same batch are already recorded.
        """

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        """None lets the action through; an Outcome (skipped/deferred) stops it."""
        return None

    def confirm(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> dict[int, Outcome]:
        """Called with the actions that passed every check, just before they are sent:
        reserve what they use (caps reserve their slots), and take back any that can no
        longer go, with its Outcome (by action id)."""
        return {}


class ConsentPolicy(DeliveryPolicy):
    """Consent and unsubscribe, re-read at send time: a planned email to a user who
    unsubscribed since planning is skipped, never sent.

    The rule is engine.consent's, the same SQL the planner applies, so planning and
    sending cannot disagree about who may be contacted.
    """

    name = "consent"

    def __init__(self) -> None:
        self.refusals: dict[tuple[str, str], str | None] = {}

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        from engine.consent import refusal_sql
        from engine.store.people import User

        users = User.__table__
        self.refusals.clear()
        wanted: dict[str, set[str]] = {}
        for action in actions:
            consent = _consent_of(action)
            if consent is not None:
                wanted.setdefault(consent, set()).add(action.user_id)
        if not wanted:  # webhooks, coupons, tags: nothing to read
            return
        with ctx.store.read() as connection:
            for consent, user_ids in wanted.items():
                rows = connection.execute(
                    sa.select(users.c.id, refusal_sql(users, consent)).where(
                        among(users.c.id, sorted(user_ids))
                    )
                )
                for user_id, refusal in rows:
                    self.refusals[(user_id, consent)] = refusal

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        if action.user_id not in ctx.contacts:
            return Outcome.skipped("unknown_user")
        consent = _consent_of(action)
        if consent is None:
            return None
        refusal = self.refusals.get((action.user_id, consent), "unknown_user")
        return None if refusal is None else Outcome.skipped(refusal)


def _consent_of(action: PlannedAction) -> str | None:
    """The consent the action's kind needs (email | sms | ads), or None."""
    kind = ACTION_KINDS.get(action.kind)
    return kind.consent if kind is not None else None


def user_zone(ctx: DeliveryContext, user_id: str) -> ZoneInfo:
    contact = ctx.contacts.get(user_id)
    if contact is not None and contact.timezone:
        # A bad zone in imported data falls back to the shop's, never fails a send.
        zone = zone_named(contact.timezone)
        if zone is not None:
            return zone
    return ctx.settings.tz


def next_window_start(now: datetime, window: SendWindow, zone: ZoneInfo) -> datetime | None:
    """None when `now` is inside the window, else the next instant the window opens."""
    local = now.astimezone(zone)
    start, end, clock = window.start, window.end, local.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if inside:
        return None
    # A window opening inside a DST gap opens when the clocks resume.
    opening = first_instant_at_or_after(datetime.combine(local.date(), start), zone)
    if opening <= now:
        tomorrow = datetime.combine(local.date() + timedelta(days=1), start)
        opening = first_instant_at_or_after(tomorrow, zone)
    return opening.astimezone(now.tzinfo)


class SendWindowPolicy(DeliveryPolicy):
    """Quiet hours: outside the send window (user's local time) the action is deferred
    to the next opening, never dropped."""

    name = "send_window"

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        raw = action.payload.get("send_window")
        window = (
            SendWindow.model_validate(raw) if raw else ctx.config.send_windows.get(action.channel)
        )
        if window is None:
            return None
        opening = next_window_start(ctx.now, window, user_zone(ctx, action.user_id))
        return None if opening is None else Outcome.deferred(opening, "quiet_hours")


class FrequencyCapPolicy(DeliveryPolicy):
    """Global per-channel caps per user ([delivery.caps]).

    Actions reach this policy highest priority first, so the most important message
    takes the free slots. A slot is counted when an action passes, before the channel
    is called: if that send then fails, a lower-priority message of the same sub-batch
    may have been capped for nothing, which errs on the side of sending less. Sends of
    earlier sub-batches of the same batch are counted from the outbox, where they were
    recorded before this sub-batch's `before_batch`.

    Other dispatchers (another daemon, a `nudge dispatch`, `[delivery] dispatchers`)
    may hold the same user's actions at the same moment. So the actions that passed
    every check reserve their slots before they are sent (`confirm`): one transaction,
    serialised with every other dispatcher's reservations (an advisory lock on
    PostgreSQL, the single writer on SQLite), counts the slots again — sends recorded
    in the window, and actions other claims reserved and have not recorded yet, lease
    not run out — and marks the actions that keep a slot (`cap_reserved_at`); the
    others are capped. Whichever dispatcher reserves second sees the first one's
    reservation (tests/delivery/test_caps_between_dispatchers.py).
    """

    name = "caps"

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.oldest: dict[tuple[str, str], datetime] = {}

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        with ctx.store.read() as connection:
            self._count(connection, ctx, actions)

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        cap = ctx.config.caps.get(action.channel)
        if cap is None:
            return None
        key = (action.user_id, action.channel)
        used = self.counts.get(key, 0)
        if used < cap.max:
            self.counts[key] = used + 1
            return None
        if cap.when_capped == "defer":
            # The next slot frees when the oldest send in the window leaves it.
            oldest = self.oldest.get(key, ctx.now)
            return Outcome.deferred(max(oldest + cap.window, ctx.now), "capped")
        return Outcome.skipped("capped")

    def confirm(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> dict[int, Outcome]:
        lease = getattr(ctx, "lease", None)
        capped = [a for a in actions if a.channel in ctx.config.caps]
        if lease is None or not capped:
            return {}
        taken_back: dict[int, Outcome] = {}
        with ctx.store.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CAP_RESERVATIONS_LOCK)))
            self._count(connection, ctx, capped)
            kept = []
            for action in capped:  # priority order, as they were checked
                verdict = self.check(ctx, action)
                if verdict is None:
                    kept.append(action.id)
                else:
                    taken_back[action.id] = verdict
            if kept:
                connection.execute(
                    sa.update(outbox)
                    .where(among(outbox.c.id, kept), held_by(lease.holder))
                    .values(cap_reserved_at=ctx.now)
                )
        return taken_back

    def _count(self, connection, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        """The slots taken per (user, channel) of `actions`, from scratch."""
        self.counts.clear()
        self.oldest.clear()
        lease = getattr(ctx, "lease", None)
        holder = lease.holder if lease is not None else None
        for channel, cap in ctx.config.caps.items():
            users = sorted({a.user_id for a in actions if a.channel == channel})
            if not users:
                continue
            query = _slots_taken(channel, users, ctx.now - cap.window, ctx.now, holder)
            for user_id, count, oldest in connection.execute(query):
                self.counts[(user_id, channel)] = count
                if oldest is not None:
                    self.oldest[(user_id, channel)] = oldest


# The key of the PostgreSQL advisory lock that serialises cap reservations (any fixed
# 64-bit number no other lock of the database uses: "nudgecap" in ASCII).
CAP_RESERVATIONS_LOCK = 0x6E75646765636170


def _slots_taken(
    channel: str, users: list[str], since: datetime, now: datetime, holder: str | None
) -> sa.Select:
    """Per user: the slots taken on `channel` — sends recorded since `since`, and
    actions other claims reserved and have not recorded (lease not run out) — and
    the oldest of those sends. One statement, so one snapshot: a reservation recorded
    as a send between two statements cannot be counted by neither."""
    reserved = sa.and_(
        outbox.c.state == "claimed",
        outbox.c.cap_reserved_at.is_not(None),
        outbox.c.lease_until >= now,
    )
    if holder is not None:
        reserved = sa.and_(reserved, outbox.c.claimed_by != holder)
    sent = sa.and_(outbox.c.state == "sent", outbox.c.sent_at > since)
    return (
        sa.select(outbox.c.user_id, sa.func.count(), sa.func.min(outbox.c.sent_at))
        .where(
            outbox.c.channel == channel,
            among(outbox.c.user_id, users),
            sa.or_(sent, reserved),
        )
        .group_by(outbox.c.user_id)
    )
