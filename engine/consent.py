"""Who may be contacted on which channel: the one definition planning, delivery and
explain all use.

DESIGN: consent is not optional, and it is the engine's job, not each rule's.
Written once, as SQL, so the planner (set-based, for everyone at T), the delivery
policy (for a batch, at the moment of sending) and `nudge explain` (for one user)
cannot disagree: they used to be two pieces of code that did (delivery let an email
go to an address-less user that planning refused; planning kept unsubscribed users
out of ad audiences and delivery let them in).

| consent | needs                                                       |
|---------|-------------------------------------------------------------|
| email   | an email address, email opt-in, and no unsubscribe          |
| sms     | a phone number and SMS opt-in                               |
| ads     | ads opt-in and no unsubscribe (the platforms get their data) |

The refusal reason is the first that applies, in this order: `unsubscribed`,
`no_consent` (not opted in), `no_contact` (nothing to send to).
"""

from __future__ import annotations

import sqlalchemy as sa

# Channel (outbox/plan) -> the consent it needs; other channels (coupon, tag,
# webhook) reach the shop's own systems and need none of their own.
CONSENT_OF_CHANNEL = {"email": "email", "sms": "sms", "audience": "ads"}
CONSENTS = ("email", "sms", "ads")


def refusal_sql(users: sa.FromClause, consent: str) -> sa.ColumnElement:
    """NULL when `consent` allows contacting the user, else the reason (a string)."""
    u = users.c
    if consent == "email":
        checks = [
            (u.unsubscribed_at.is_not(None), "unsubscribed"),
            (u.email_opt_in.is_not(True), "no_consent"),
            (sa.func.coalesce(u.email, "") == "", "no_contact"),
        ]
    elif consent == "sms":
        checks = [
            (u.sms_opt_in.is_not(True), "no_consent"),
            (sa.func.coalesce(u.phone, "") == "", "no_contact"),
        ]
    elif consent == "ads":
        checks = [
            (u.unsubscribed_at.is_not(None), "unsubscribed"),
            (u.ads_opt_in.is_not(True), "no_consent"),
        ]
    else:
        raise ValueError(f"unknown consent {consent!r}; known: {', '.join(CONSENTS)}")
    return sa.case(*((condition, sa.literal(reason)) for condition, reason in checks))


def consent_sql(users: sa.FromClause, consent: str) -> sa.ColumnElement[bool]:
    """May the user be contacted with `consent` (email | sms | ads)?"""
    return refusal_sql(users, consent).is_(None)


def channel_consent_sql(users: sa.FromClause, channel: str) -> sa.ColumnElement[bool]:
    """May `channel` reach this user? True for channels that need no consent."""
    consent = CONSENT_OF_CHANNEL.get(channel)
    return sa.true() if consent is None else consent_sql(users, consent)
