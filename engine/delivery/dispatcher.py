"""One pass over the outbox: claim a batch, then send it in sub-batches, recording each.

    report = dispatch_once(store, clock=utcnow, worker_id="host-1", channels=build_channels(s))

Time comes from `clock` (a callable returning an aware instant) or is frozen at `now`
(tests, `nudge dispatch --at`); nothing here reads the wall clock itself.

The claim is one short transaction; it makes this pass the holder of up to
`batch_size` rows (engine.delivery.claims). The batch is then sent in sub-batches,
highest priority first. For each sub-batch:

1. the policies' `before_batch` re-read consent, the rule's `unless` and caps for just
   its rows, so an unsubscribe committed mid-batch stops the rest of the batch;
2. the kinds deliver it; before each send, `DispatchContext.before_send` moves `now` to
   the send's own instant (the `webhook-timestamp`, the email Date), renews the lease
   when a third of it has passed, and holds back a row that must not go now: stopping
   or taken over (withheld), or the sub-batch has been sending for `recheck` (carried
   to the next sub-batch, to be re-checked first);
3. one transaction records its outcomes and releases its withheld rows, both fenced to
   the rows this claim still holds, and fences the next sub-batch: confirms its rows
   are still held (and renews every held row's lease when a third of it has passed);
   rows taken over are never sent;
4. its coupons are settled.

Sizes: the first sub-batch has `sub_batch_size` rows; each next one as many as take
about half of `recheck` at the pace of the last (at least `sub_batch_size`): a fast
channel pays the per-sub-batch queries rarely, a slow one is re-checked every
`recheck` at most (plus one send), however its pace changes.

Delivery happens outside any transaction, so a slow SMTP server never holds database
locks. If the process dies mid-batch, its unrecorded rows stay claimed until their
lease ends; another dispatcher then takes them over; channels receive the idempotency
key so that a sink can drop the resulting duplicate. With `stop` set, the send in
progress finishes, the sub-batch is recorded and the rest of the batch released.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

import sqlalchemy as sa

from engine.action_kinds import ACTION_KINDS
from engine.clock import ensure_aware
from engine.coupons.void import settle_after_dispatch
from engine.creatives.environment import files_snapshot
from engine.delivery.backoff import retry_delay
from engine.delivery.channels import ChannelSet
from engine.delivery.claims import Lease, claim_batch, new_holder, record_outcomes, release_claims
from engine.delivery.config import DeliveryConfig, delivery_config
from engine.delivery.context import Contact, DeliveryContext, Outcome, PlannedAction
from engine.delivery.middleware import configured_policies
from engine.delivery.policy import DeliveryPolicy
from engine.durations import parse_duration
from engine.store import Store
from engine.store.people import User
from engine.store.sql import among

if TYPE_CHECKING:
    from engine.planning.compile import RuleSet

users = User.__table__
_CONTACT_COLUMNS = tuple(users.c[name] for name in Contact._fields)

Clock = Callable[[], datetime]
# What RulePolicy checks `unless` and flights against: a RuleSet, a callable returning
# one (the daemon's latest rules), or None (the rule files, loaded once per batch).
Rules: TypeAlias = "RuleSet | Callable[[], RuleSet] | None"


@dataclass
class DispatchReport:
    """What one pass did: claimed rows and counts per outcome and skip reason.

    Besides the recorded outcomes (sent, skipped, deferred, retry, dead), `outcomes`
    counts `released` (given back unsent because the dispatcher was stopping) and `lost`
    (taken over by another dispatcher after this one's lease ran out: neither sent nor
    recorded here); every claimed row is in exactly one of them.
    """

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        return self.outcomes["lost"]

    @property
    def released(self) -> int:
        return self.outcomes["released"]

    def add(self, other: DispatchReport) -> None:
        self.claimed += other.claimed
        self.outcomes.update(other.outcomes)
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, object]:
        return {
            "claimed": self.claimed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "reasons": dict(sorted(self.reasons.items())),
        }


@dataclass
class DispatchContext(DeliveryContext):
    """The dispatcher's DeliveryContext: the clock, the claim's lease and the stop event.

    `before_send(action)` is called by the kinds' sends (engine.actions.delivering) just
    before each message is built and handed to a channel.
    """

    clock: Clock | None = None
    lease: Lease | None = None
    stop: threading.Event | None = None
    # The current sub-batch: when it is cut, how many of its rows went to a channel,
    # and its rows not sent: withheld (stopping, or taken over) or carried (cut).
    cut_at: datetime | None = None
    handed: int = 0
    unconfirmed: bool = False
    withheld: set[int] = field(default_factory=set)
    carried: set[int] = field(default_factory=set)

    def start_sub_batch(self, now: datetime, cut_at: datetime | None) -> None:
        self.now, self.cut_at, self.handed, self.unconfirmed = now, cut_at, 0, False
        self.withheld, self.carried = set(), set()

    def before_send(self, action: PlannedAction) -> bool:
        """May `action` be sent now? Moves `now` to the send's instant and renews the
        lease when due. False when stopping, when the row was taken over or the renewal
        could not reach the database (withheld: given back, or left to its new holder),
        or when the sub-batch has been sending for `recheck` (carried: re-checked and
        sent in the next sub-batch)."""
        if self.stop is not None and self.stop.is_set():
            self.withheld.add(action.id)
            return False
        if self.clock is not None:
            self.now = self.clock()
        if self.cut_at is not None and self.handed and self.now >= self.cut_at:
            self.carried.add(action.id)
            return False
        if self.lease is not None:
            if self.lease.due(self.now) and not self.unconfirmed:
                try:
                    self.lease.renew(self.now)
                except sa.exc.SQLAlchemyError:
                    # The database is unreachable: the claim cannot be confirmed, so
                    # nothing more is sent in this sub-batch; what was sent is recorded
                    # (or, if the database stays away, re-sent after the lease).
                    self.unconfirmed = True
            if self.unconfirmed or action.id not in self.lease.held:
                self.withheld.add(action.id)
                return False
        self.handed += 1
        return True


def load_contacts(store: Store, user_ids: Sequence[str]) -> dict[str, Contact]:
    """The users of one batch, in one query."""
    if not user_ids:
        return {}
    query = sa.select(*_CONTACT_COLUMNS).where(among(users.c.id, sorted(set(user_ids))))
    with store.read() as connection:
        # By position: the columns are Contact's fields in order (id first).
        return {row[0]: Contact(*row) for row in connection.execute(query)}


def finalise(outcome: Outcome, action: PlannedAction, config: DeliveryConfig, now: datetime):
    """Turn a retry into a scheduled retry, or into dead once attempts are used up."""
    if outcome.state == "deferred" and (outcome.until is None or outcome.until <= now):
        # Never due again at the same `now`: dispatch_until_idle must terminate.
        return Outcome.deferred(now + timedelta(minutes=1), outcome.reason or "deferred")
    if outcome.state != "retry":
        return outcome
    if action.attempts >= config.retry.max_attempts:
        return Outcome.dead("max_attempts", outcome.error or "failed")
    delay = retry_delay(
        action.idempotency_key,
        action.attempts,
        base=parse_duration(config.retry.base),
        max_delay=parse_duration(config.retry.max_delay),
    )
    return Outcome("retry", reason="retrying", error=outcome.error, until=now + delay)


def deliver_batch(ctx: DeliveryContext, actions: list[PlannedAction]) -> list[Outcome]:
    """Run each kind's deliver hook over its actions; one Outcome per action, in order."""
    outcomes: dict[int, Outcome] = {}
    by_kind: dict[str, list[PlannedAction]] = {}
    for action in actions:
        by_kind.setdefault(action.kind, []).append(action)
    for kind_name, group in by_kind.items():
        kind = ACTION_KINDS.get(kind_name)
        if kind is None or kind.deliver is None:
            for action in group:
                outcomes[action.id] = Outcome.dead(
                    "unknown_kind", f"no deliverable action kind {kind_name!r} is registered"
                )
            continue
        try:
            results = kind.deliver(ctx, group)
        except Exception as exc:  # noqa: BLE001 - one broken kind must not stop the others
            results = [Outcome.retry(f"{type(exc).__name__}: {exc}")] * len(group)
        for action, outcome in zip(group, results, strict=True):
            outcomes[action.id] = outcome
    return [outcomes[action.id] for action in actions]


def frozen(now: datetime) -> Clock:
    """A clock that always says `now` (tests, `nudge dispatch --at`)."""
    ensure_aware(now)
    return lambda: now


def _clock_of(now: datetime | None, clock: Clock | None) -> Clock:
    if (now is None) == (clock is None):
        raise TypeError("give exactly one of now= (a frozen instant) and clock=")
    return clock if clock is not None else frozen(now)


def dispatch_once(
    store: Store,
    *,
    now: datetime | None = None,
    clock: Clock | None = None,
    worker_id: str,
    channels: ChannelSet,
    batch_size: int | None = None,
    policies: list[DeliveryPolicy] | None = None,
    config: DeliveryConfig | None = None,
    stop: threading.Event | None = None,
    rules: Rules = None,
) -> DispatchReport:
    """Claim one batch of due actions and deliver it; returns what happened.

    Time is `clock()` (read at the claim, before each sub-batch, before each send and at
    each record) or frozen at `now`. With `stop` set, no batch is claimed; set while a
    batch is in flight, the send in progress finishes, what was sent is recorded and
    the rest is released, and this returns.
    """
    clock = _clock_of(now, clock)
    config = config or delivery_config(store.settings)
    # A fresh list per batch (policies keep per-batch state), in `[delivery] policies` order.
    policies = configured_policies(config, rules) if policies is None else policies
    limit = batch_size or config.batch_size
    if stop is not None and stop.is_set():
        return DispatchReport()
    holder = new_holder(worker_id)
    claimed_at = ensure_aware(clock())
    with store.begin() as connection:
        actions = claim_batch(
            connection,
            now=claimed_at,
            worker_id=holder,
            lease_until=claimed_at + config.lease_duration,
            limit=limit,
        )
    report = DispatchReport(claimed=len(actions))
    if not actions:
        return report
    lease = Lease(
        store,
        holder,
        [a.id for a in actions],
        duration=config.lease_duration,
        claimed_at=claimed_at,
    )
    ctx = DispatchContext(
        store=store,
        settings=store.settings,
        config=config,
        channels=channels,
        now=claimed_at,
        worker_id=worker_id,
        clock=clock,
        lease=lease,
        stop=stop,
        # Addresses, zones and locales, once per batch; consent is re-read per sub-batch.
        contacts=load_contacts(store, [a.user_id for a in actions]),
    )
    floor, recheck = config.sub_batch_size, config.recheck_duration
    size = floor
    queue = list(actions)
    held = {a.id for a in queue}  # claimed a moment ago
    while queue:
        if stop is not None and stop.is_set():
            rest = [a.id for a in queue]
            with store.begin() as connection:
                released = release_claims(connection, rest, holder=holder, now=clock())
            lease.lose(set(rest) - released)
            lease.done(released)
            if released:
                report.outcomes["released"] += len(released)
            break
        chunk, queue = queue[:size], queue[size:]
        started = clock()
        ctx.start_sub_batch(started, started + recheck)
        results = _check_and_send(ctx, [a for a in chunk if a.id in held], policies)
        finished = clock()
        carried = [a for a in chunk if a.id in ctx.carried]
        size = _next_size(len(chunk) - len(carried), finished - started, floor, recheck)
        queue = carried + queue
        held = _record(ctx, results, queue[:size], report, now=finished)
    if lease.lost:
        report.outcomes["lost"] += len(lease.lost)
    return report


def _next_size(done: int, took: timedelta, floor: int, recheck: timedelta) -> int:
    """Rows for the next sub-batch: as many as take about half of `recheck` at the pace
    of the last one, at least `floor` (a cut one, done = its rows sent, was slow)."""
    if took <= timedelta(0):
        return 1_000_000  # no time passed (a frozen clock): the rest of the batch
    return max(floor, int(done * (recheck / 2) / took))


def _check_and_send(
    ctx: DispatchContext, actions: list[PlannedAction], policies: list[DeliveryPolicy]
) -> list[tuple[PlannedAction, Outcome]]:
    """Run the policies over one sub-batch (its rows confirmed held), then deliver those
    that pass; the outcome of each row that was sent or decided (not of those withheld
    or carried by `before_send`)."""
    if not actions:
        return []
    # `before_batch` and `confirm` are optional: a plugin's policy needs only a name and
    # `check` (engine/delivery/policy_kinds.py).
    for policy in policies:
        before_batch = getattr(policy, "before_batch", None)
        if before_batch is not None:
            before_batch(ctx, actions)
    decided: dict[int, Outcome] = {}
    passing: list[PlannedAction] = []
    for action in actions:  # priority order: caps give their slots to the first
        for policy in policies:  # the first verdict decides
            verdict = policy.check(ctx, action)
            if verdict is not None:
                decided[action.id] = verdict
                break
        else:
            passing.append(action)
    for policy in policies:
        confirm = getattr(policy, "confirm", None)
        taken_back = confirm(ctx, passing) if confirm is not None else None
        if taken_back:
            decided.update(taken_back)
            passing = [a for a in passing if a.id not in taken_back]
    # Template files are looked up once per sub-batch: an edit is used from the next.
    with files_snapshot():
        delivered = deliver_batch(ctx, passing)
    for action, outcome in zip(passing, delivered, strict=True):
        decided[action.id] = outcome
    unsent = ctx.withheld | ctx.carried
    return [(a, decided[a.id]) for a in actions if a.id not in unsent]


def _record(
    ctx: DispatchContext,
    results: list[tuple[PlannedAction, Outcome]],
    following: list[PlannedAction],
    report: DispatchReport,
    *,
    now: datetime,
) -> set[int]:
    """Record a sub-batch and give back its withheld rows, fenced to the rows still
    held; in the same transaction, fence the `following` sub-batch: returns those of
    its ids still held. Then settle the sub-batch's coupons."""
    lease, config = ctx.lease, ctx.config
    results = [(a, finalise(o, a, config, now)) for a, o in results]
    withheld = sorted(ctx.withheld)
    if not (results or withheld or following):
        return set()
    with ctx.store.begin() as connection:
        recorded = record_outcomes(connection, results, now=now, worker_id=lease.holder)
        released = release_claims(connection, withheld, holder=lease.holder, now=now)
        lease.lose({a.id for a, _ in results} - recorded)
        lease.lose(set(withheld) - released)
        lease.done(recorded | released)
        held = lease.fence(now, [a.id for a in following], connection)
    results = [(a, o) for a, o in results if a.id in recorded]
    # A coupon whose email/SMS was skipped or went dead is voided; after the commit
    # above, not inside it, so concurrent dispatchers cannot both miss it (see
    # engine/coupons/void.py).
    settle_after_dispatch(ctx.store, results, now=now)
    if released:
        report.outcomes["released"] += len(released)
    for _action, outcome in results:
        report.outcomes[outcome.state] += 1
        if outcome.reason and outcome.state in ("skipped", "deferred", "dead"):
            report.reasons[outcome.reason] += 1
    return held


def dispatch_until_idle(
    store: Store,
    *,
    now: datetime | None = None,
    clock: Clock | None = None,
    worker_id: str,
    channels: ChannelSet,
    batch_size: int | None = None,
    max_batches: int = 1_000_000,
    config: DeliveryConfig | None = None,
    stop: threading.Event | None = None,
    rules: Rules = None,
) -> DispatchReport:
    """Repeat dispatch_once until nothing is due or `stop` is set (what `--once` does).

    At a frozen `now`, retries and deferrals are scheduled after it, so this always
    terminates; with a `clock`, a pass claims what is due at its own start.
    """
    clock = _clock_of(now, clock)
    config = config or delivery_config(store.settings)
    total = DispatchReport()
    for _ in range(max_batches):
        if stop is not None and stop.is_set():
            break
        report = dispatch_once(
            store,
            clock=clock,
            worker_id=worker_id,
            channels=channels,
            batch_size=batch_size,
            config=config,
            stop=stop,
            rules=rules,
        )
        total.add(report)
        if report.claimed == 0:
            break
    return total
