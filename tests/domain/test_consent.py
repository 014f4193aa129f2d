"""engine.consent: one definition of who may be contacted, pinned case by case, and
the planner and the delivery policy reading it alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from engine.consent import refusal_sql
from engine.store.people import User

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
BASE = {"email": "a@example.com", "phone": "+8613800138000", "attributes": {}}
# (user fields, consent, refusal)
CASES = [
    ({"email_opt_in": True}, "email", None),
    ({"email_opt_in": False}, "email", "no_consent"),
    ({"email_opt_in": True, "email": None}, "email", "no_contact"),
    ({"email_opt_in": True, "email": ""}, "email", "no_contact"),
    ({"email_opt_in": True, "unsubscribed_at": T}, "email", "unsubscribed"),
    ({"email_opt_in": False, "unsubscribed_at": T}, "email", "unsubscribed"),
    ({"sms_opt_in": True}, "sms", None),
    ({"sms_opt_in": True, "phone": None}, "sms", "no_contact"),
    ({"sms_opt_in": False}, "sms", "no_consent"),
    # An email unsubscribe is not an SMS opt-out (List-Unsubscribe is about email)...
    ({"sms_opt_in": True, "unsubscribed_at": T}, "sms", None),
    # ...but ad platforms get the user's data, so it ends ad audiences too.
    ({"ads_opt_in": True}, "ads", None),
    ({"ads_opt_in": True, "unsubscribed_at": T}, "ads", "unsubscribed"),
    ({"ads_opt_in": False}, "ads", "no_consent"),
]


@pytest.mark.parametrize(("fields", "consent", "refusal"), CASES)
def test_refusals(store, fields, consent, refusal):
    users = User.__table__
    row = {"id": "u", **BASE, "created_at": T, "updated_at": T, **fields}
    with store.begin() as connection:
        connection.execute(users.insert().values(**row))
        found = connection.execute(
            sa.select(refusal_sql(users, consent)).where(users.c.id == "u")
        ).scalar()
    assert found == refusal


def test_planning_and_delivery_agree(store, settings, tmp_path):
    """Planned while reachable; the address removed before sending: the delivery policy
    refuses for the very reason the planner would have given (no_contact)."""
    from engine.delivery.runner import run_dispatcher
    from engine.planning.runner import evaluate
    from engine.store.planning import Decision, OutboxAction
    from tests.delivery.delivery_helpers import with_delivery
    from tests.planning.helpers import ingest, ruleset_for, write_rule

    store = with_delivery(store)
    write_rule(
        store.settings,
        "welcome",
        "trigger: {event: signup}\nactions:\n"
        "  coupon: {value: 10, currency: CNY, expires_in: 7d}\n"
        "  email: {creative: thank-you}\n",
    )
    ingest(
        store,
        tmp_path,
        now=T,
        users=[
            {"id": "kept", "email": "k@example.com", "email_opt_in": True},
            {"id": "bare", "email_opt_in": True},
        ],
        events=[{"user": u, "type": "signup", "at": T.isoformat()} for u in ("kept", "bare")],
    )
    evaluate(store, ruleset_for(store.settings), at=T)
    d = Decision.__table__
    with store.connect() as connection:
        decided = dict(connection.execute(sa.select(d.c.user_id, d.c.reason)).all())
    assert decided == {"kept": None, "bare": "no_consent"}
    with store.begin() as connection:
        connection.execute(User.__table__.update().values(email=None))
    run_dispatcher(store, once=True, at=T)
    o = OutboxAction.__table__
    with store.connect() as connection:
        email = connection.execute(
            sa.select(o.c.state, o.c.reason).where(o.c.kind == "email")
        ).one()
    assert tuple(email) == ("skipped", "no_contact")
