"""The temporary tables the ingest writers stage batches in (engine/ingest/writers.py).

Private to the connection that creates them: on PostgreSQL `ON COMMIT DELETE ROWS`
empties them at every commit; on SQLite the writer empties them itself. The serve API
checks a pooled connection against TEMP_TABLES before it writes through it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from engine.ingest.event_staging import EVENT_COPY_COLUMNS
from engine.store.marketing import AdSpend
from engine.store.people import Event, User
from engine.store.types import UTCDateTime

users = User.__table__
events = Event.__table__
ad_spend = AdSpend.__table__

CONSENT_COLUMNS = ("email_opt_in", "sms_opt_in", "ads_opt_in")
USER_TEXT_COLUMNS = ("email", "phone", "name", "country", "timezone", "locale", "member_tier")

# Staging JSON must keep Python None as SQL NULL ("not given"), not the JSON `null`.
_StagedJson = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
_temp = sa.MetaData()
# ON COMMIT DELETE ROWS empties the PostgreSQL staging tables after every batch;
# SQLite has no such clause, so the writer deletes their rows at the start of a batch.
_temp_options = {"prefixes": ["TEMPORARY"], "postgresql_on_commit": "DELETE ROWS"}

batch_users = sa.Table(
    "nudge_ingest_batch_users",
    _temp,
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("unsubscribed", sa.Boolean, nullable=False),
    **_temp_options,
)
# The users of all the batches of one write transaction (several batches of a file
# share one: engine/ingest/pipeline.py), each once, filled when it ends from the sets
# the reader thread built (`PreparedEvents.user_set`).
transaction_users = sa.Table(
    "nudge_ingest_transaction_users",
    _temp,
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("unsubscribed", sa.Boolean, nullable=False),
    **_temp_options,
)
# PostgreSQL: the rows the transaction's event inserts wrote (COPYed beside a batch
# COPYed straight into events, or RETURNING of the staged insert), added to the
# profiles once when the transaction ends. SQLite finds them by rowid instead.
inserted_events = sa.Table(
    "nudge_ingest_inserted",
    _temp,
    sa.Column("user_id", events.c.user_id.type),
    sa.Column("type", events.c.type.type),
    sa.Column("occurred_at", events.c.occurred_at.type),
    sa.Column("amount", events.c.amount.type),
    **_temp_options,
)
staged_users = sa.Table(
    "nudge_ingest_users",
    _temp,
    sa.Column("id", sa.String(128), primary_key=True),
    *(sa.Column(name, users.c[name].type) for name in USER_TEXT_COLUMNS),
    sa.Column("member_since", UTCDateTime),
    sa.Column("attributes", _StagedJson),
    *(sa.Column(name, sa.Boolean) for name in CONSENT_COLUMNS),
    sa.Column("unsubscribed_at", UTCDateTime),
    sa.Column("has_tags", sa.Boolean, nullable=False),
    **_temp_options,
)
# The columns of a COPY into `events` (ingested_at included), so that the COPY text of
# a batch fits either: the staging table is its fallback (engine/ingest/writers.py).
staged_events = sa.Table(
    "nudge_ingest_events",
    _temp,
    *(sa.Column(c.name, c.type) for c in events.c if c.name in EVENT_COPY_COLUMNS),
    **_temp_options,
)
staged_spend = sa.Table(
    "nudge_ingest_spend",
    _temp,
    *(sa.Column(c.name, c.type) for c in ad_spend.c),
    **_temp_options,
)
TEMP_TABLES = (
    batch_users,
    transaction_users,
    inserted_events,
    staged_users,
    staged_events,
    staged_spend,
)
