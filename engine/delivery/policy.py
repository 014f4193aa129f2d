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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from engine.action_kinds import ACTION_KINDS
from engine.delivery.config import SendWindow
from engine.delivery.context import DeliveryContext, Outcome, PlannedAction
from engine.localtime import first_instant_at_or_after
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
        try:
            return ZoneInfo(contact.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a bad zone in imported data falls back to the shop's, never fails a send
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

    Other dispatchers (another daemon, a `nudge dispatch`) may hold the same user's
    actions at the same moment, not yet recorded. An action another claim holds (lease
    not run out) takes a slot when that claim came first: claimed earlier, or at the
    same instant by the smaller holder. Each of two claims therefore counts the other's
    action or is counted by it, never both and never neither, whichever order their
    checks run in: one message is sent, the other capped (tests/delivery/
    test_caps_between_dispatchers.py).
    """

    name = "caps"

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.oldest: dict[tuple[str, str], datetime] = {}

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        self.counts.clear()
        self.oldest.clear()
        for channel, cap in ctx.config.caps.items():
            users = sorted({a.user_id for a in actions if a.channel == channel})
            if not users:
                continue
            query = (
                sa.select(outbox.c.user_id, sa.func.count(), sa.func.min(outbox.c.sent_at))
                .where(
                    outbox.c.channel == channel,
                    outbox.c.state == "sent",
                    outbox.c.sent_at > ctx.now - cap.window,
                    among(outbox.c.user_id, users),
                )
                .group_by(outbox.c.user_id)
            )
            with ctx.store.read() as connection:
                for user_id, count, oldest in connection.execute(query):
                    self.counts[(user_id, channel)] = count
                    self.oldest[(user_id, channel)] = oldest
                lease = getattr(ctx, "lease", None)
                if lease is not None:
                    for user_id, count in connection.execute(
                        _held_before(lease, channel, users, ctx.now)
                    ):
                        key = (user_id, channel)
                        self.counts[key] = self.counts.get(key, 0) + count

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


def _held_before(lease, channel: str, users: list[str], now: datetime) -> sa.Select:
    """Per user, the actions on `channel` that other claims hold (lease not run out)
    and that came before `lease`'s claim: claimed earlier, or at the same instant by
    a smaller holder. While claimed, a row's `updated_at` is its claim's instant."""
    earlier = sa.or_(
        outbox.c.updated_at < lease.claimed_at,
        sa.and_(outbox.c.updated_at == lease.claimed_at, outbox.c.claimed_by < lease.holder),
    )
    return (
        sa.select(outbox.c.user_id, sa.func.count())
        .where(
            outbox.c.channel == channel,
            outbox.c.state == "claimed",
            outbox.c.claimed_by != lease.holder,
            outbox.c.lease_until >= now,
            among(outbox.c.user_id, users),
            earlier,
        )
        .group_by(outbox.c.user_id)
    )
