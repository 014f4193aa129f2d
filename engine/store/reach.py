"""Whether a decision reached the user: the one definition `after:` follow-ups
(engine/triggers/after.py) and the `received()` condition (engine/conditions/functions.py)
share.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.store.planning import OutboxAction

outbox = OutboxAction.__table__
# Built once, not per statement: a table's alias builds a proxy of every column the
# first time its columns are read, which the daemon's idle tick paid for each rule.
_REACH, _CARRIER = outbox.alias("reach"), outbox.alias("carrier")
# Outbox states of an action that reached the user or is still on its way.
REACHING_STATES = ("planned", "claimed", "sent")
# Channels that carry a decision to the user (or to the shop's systems about them).
# Coupons and tags only take effect through them: a coupon whose email was skipped
# was never seen, so it does not make the decision "received".
CARRYING_CHANNELS = ("email", "sms", "audience", "webhook")


def reached(decision_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """The decision reached the user, or is on its way (engine/triggers/after.py doc).

    With carrying actions (email, SMS, audience, webhook), one of them must be sent or
    pending; a decision with only coupons or tags counts when one of those is.
    """
    o, carrier = _REACH, _CARRIER
    reaching = [o.c.decision_id == decision_id, o.c.state.in_(REACHING_STATES)]
    has_carrier = sa.exists().where(
        carrier.c.decision_id == decision_id, carrier.c.channel.in_(CARRYING_CHANNELS)
    )
    return sa.or_(
        sa.exists().where(*reaching, o.c.channel.in_(CARRYING_CHANNELS)),
        sa.and_(~has_carrier, sa.exists().where(*reaching)),
    )
