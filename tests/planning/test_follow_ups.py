"""Follow-ups mean what they say (DESIGN invariant 7), through ingest -> run -> dispatch.

- `since="trigger"` windows start at the occurrence that started the chain;
- an `unless` that held decides that occurrence for good;
- `after: X wait: W` is due W after X's occurrence, not after Nudge noticed it;
- `after:` and `received()` follow only actions that reached the user;
- `unless` is re-checked at send time for every trigger kind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.delivery.runner import run_dispatcher
from engine.planning.runner import evaluate
from engine.store.planning import Decision, OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

CART_SEEN = """\
trigger: {event: add_to_cart}
actions:
  tag: {add: [cart-seen]}
"""

REMINDER = """\
trigger: {{after: cart-seen, wait: 1h}}
unless: {unless}
actions:
  tag: {{add: [reminded]}}
"""
PLAIN_REMINDER = """\
trigger: {after: cart-seen, wait: 1h}
actions:
  tag: {add: [reminded]}
"""

# Webhooks go to files by default; the endpoint only has to be named.
CRM = {"webhooks": {"crm": {"url": "https://crm.example.com/hooks/nudge"}}}


def decisions_of(store, rule_id: str) -> dict[str, tuple[str, str | None]]:
    d = Decision.__table__
    with store.connect() as connection:
        rows = connection.execute(
            sa.select(d.c.user_id, d.c.outcome, d.c.reason).where(d.c.rule_id == rule_id)
        ).all()
    return {user: (outcome, reason) for user, outcome, reason in rows}


def outbox_users(store, rule_id: str) -> list[str]:
    o = OutboxAction.__table__
    with store.connect() as connection:
        query = sa.select(o.c.user_id).where(o.c.rule_id == rule_id).order_by(o.c.user_id)
        return list(connection.execute(query).scalars())


def tick(store, settings, at: datetime):
    evaluation = evaluate(store, ruleset_for(settings), at=at)
    assert not evaluation.failed, [o.error for o in evaluation.outcomes]
    return {o.rule_id: o for o in evaluation.outcomes}


@pytest.mark.parametrize(
    "unless",
    [
        'count("purchase", since="trigger") >= 1',
        # A window sliding with T: the purchase leaves it before the last tick, but the
        # stop at -1h already decided the occurrence.
        'count("purchase", within="1h") >= 1',
    ],
    ids=["since-trigger", "sliding-window"],
)
def test_a_reminder_stopped_by_a_purchase_is_never_sent(store, settings, tmp_path, unless):
    write_rule(settings, "cart-seen", CART_SEEN)
    write_rule(settings, "cart-reminder", REMINDER.format(unless=unless))
    ingest(store, tmp_path, now=T - 3 * HOUR, users=[{"id": "buyer"}, {"id": "browser"}])
    ingest(
        store,
        tmp_path,
        now=T - 3 * HOUR,
        events=[
            {"user": "buyer", "type": "add_to_cart", "at": (T - 3 * HOUR).isoformat()},
            {"user": "browser", "type": "add_to_cart", "at": (T - 3 * HOUR).isoformat()},
        ],
    )
    tick(store, settings, T - 3 * HOUR)
    ingest(
        store,
        tmp_path,
        now=T - 90 * timedelta(minutes=1),
        events=[
            {
                "user": "buyer",
                "type": "purchase",
                "at": (T - 90 * timedelta(minutes=1)).isoformat(),
                "amount": 120,
            }
        ],
    )
    tick(store, settings, T - HOUR)
    final = tick(store, settings, T)

    assert decisions_of(store, "cart-reminder") == {
        "buyer": ("suppressed", "unless"),
        "browser": ("planned", None),
    }
    assert outbox_users(store, "cart-reminder") == ["browser"]
    # The last tick decided nothing new: the stopped occurrence stays stopped.
    assert final["cart-reminder"].matched == 0


def test_since_trigger_starts_at_the_original_occurrence_of_the_chain(store, settings, tmp_path):
    """For `after: cart-seen`, the trigger is the add-to-cart, not the tag's decision:
    a purchase between the cart and the moment cart-seen was decided still counts."""
    write_rule(settings, "cart-seen", CART_SEEN)
    write_rule(
        settings,
        "cart-reminder",
        REMINDER.format(unless='sum("purchase.amount", since="trigger") > 0'),
    )
    ingest(store, tmp_path, now=T, users=[{"id": "buyer"}, {"id": "early"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": "buyer", "type": "add_to_cart", "at": (T - 5 * HOUR).isoformat()},
            {"user": "buyer", "type": "purchase", "at": (T - 4 * HOUR).isoformat(), "amount": 9},
            # Bought before the cart: not since the trigger.
            {"user": "early", "type": "purchase", "at": (T - 6 * HOUR).isoformat(), "amount": 9},
            {"user": "early", "type": "add_to_cart", "at": (T - 5 * HOUR).isoformat()},
        ],
    )

    tick(store, settings, T)

    assert decisions_of(store, "cart-reminder") == {
        "buyer": ("suppressed", "unless"),
        "early": ("planned", None),
    }


def test_the_wait_runs_from_the_occurrence_not_from_when_it_was_noticed(store, settings, tmp_path):
    """A cart from five hours ago, loaded late: the 1h reminder is due at once."""
    write_rule(settings, "cart-seen", CART_SEEN)
    write_rule(settings, "cart-reminder", PLAIN_REMINDER)
    ingest(store, tmp_path, now=T, users=[{"id": "late"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[{"user": "late", "type": "add_to_cart", "at": (T - 5 * HOUR).isoformat()}],
    )

    outcomes = tick(store, settings, T)

    assert outcomes["cart-seen"].planned == 1
    assert outcomes["cart-reminder"].planned == 1
    d = Decision.__table__
    with store.connect() as connection:
        occurred, trigger = connection.execute(
            sa.select(d.c.occurred_at, d.c.trigger_at).where(d.c.rule_id == "cart-reminder")
        ).one()
    assert (occurred, trigger) == (T - 4 * HOUR, T - 5 * HOUR)


def test_a_follow_up_needs_an_action_that_reached_the_user(store, settings, tmp_path):
    """Planned, then consent withdrawn before sending: the welcome email is skipped, so
    neither `after: welcome` nor `received("welcome")` treats the user as welcomed."""
    from tests.delivery.delivery_helpers import with_delivery

    store = with_delivery(store)
    settings = store.settings
    write_rule(
        settings,
        "welcome",
        "trigger: {event: signup}\nactions:\n"
        "  coupon: {value: 10, currency: CNY, expires_in: 7d}\n"
        "  email: {creative: thank-you}\n",
    )
    write_rule(
        settings,
        "welcome-follow-up",
        "trigger: {after: welcome, wait: 1d}\nactions:\n  tag: {add: [followed]}\n",
    )
    users = [{"id": u, "email": f"{u}@example.com", "email_opt_in": True} for u in ("kept", "gone")]
    ingest(store, tmp_path, now=T, users=users)
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": u, "type": "signup", "at": (T - HOUR).isoformat()} for u in ("kept", "gone")
        ],
    )
    tick(store, settings, T)
    # "gone" withdraws consent before the email goes out.
    ingest(store, tmp_path, now=T, users=[{"id": "gone", "email_opt_in": False}])
    run_dispatcher(store, once=True, at=T + timedelta(minutes=5))
    write_rule(
        settings,
        "welcomed",
        'trigger: {schedule: "0 * * * *"}\nwhen: received("welcome")\n'
        "actions:\n  tag: {add: [welcomed]}\n",
    )

    later = tick(store, settings, T + 2 * timedelta(days=1))

    assert decisions_of(store, "welcome-follow-up") == {"kept": ("planned", None)}
    assert later["welcomed"].planned == 1
    assert decisions_of(store, "welcomed") == {"kept": ("planned", None)}


def test_unless_is_rechecked_at_send_time_for_an_event_rule(store, settings, tmp_path):
    """Planned on the cart event; the purchase arrives before the webhook goes out."""
    from tests.delivery.delivery_helpers import with_delivery

    store = with_delivery(store, **CRM)
    settings = store.settings
    write_rule(
        settings,
        "cart-nudge",
        "trigger: {event: add_to_cart}\n"
        'unless: count("purchase", since="trigger") >= 1\n'
        "send_window: {between: ['09:00', '21:00']}\n"
        "actions:\n  webhook: {url: crm}\n",
    )
    ingest(store, tmp_path, now=T, users=[{"id": "buyer"}])
    # 23:00 in Shanghai: planned now, deferred to the morning.
    night = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    ingest(
        store,
        tmp_path,
        now=night,
        events=[{"user": "buyer", "type": "add_to_cart", "at": night.isoformat()}],
    )
    assert tick(store, settings, night)["cart-nudge"].planned == 1
    run_dispatcher(store, once=True, at=night)
    ingest(
        store,
        tmp_path,
        now=night + HOUR,
        events=[
            {"user": "buyer", "type": "purchase", "at": (night + HOUR).isoformat(), "amount": 50}
        ],
    )

    run_dispatcher(store, once=True, at=night + 12 * HOUR)

    o = OutboxAction.__table__
    with store.connect() as connection:
        state, reason = connection.execute(sa.select(o.c.state, o.c.reason)).one()
    assert (state, reason) == ("skipped", "unless")
