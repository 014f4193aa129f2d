"""Bulk writers: one batch of validated rows -> the store, set-based, in one transaction.

Events are staged once per batch and converted by the database (event_staging.py): on
SQLite one JSON document read back by `json_each` in a single INSERT ... SELECT; on
PostgreSQL the batch's COPY text, built in the reader thread, is COPYed straight into
`events` (and the columns the profiles need into `inserted_events`) under a savepoint,
and only when that meets a row already stored (or one twice in the batch) is it rolled
back and taken the old way: COPY into a TEMP staging table and one INSERT ... SELECT
... ON CONFLICT DO NOTHING. Several batches may share a write transaction
(`begin_events`, `add_events` per batch, `end_events`): bare users for unknown ids,
the profile upkeep, the stage flags and the unsubscribe update run once per
transaction, set-based, never once per row. Users and ad spend
rows are upserted through Core executemany (SQLite) or the same COPY staging.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from engine.ingest.event_staging import (
    EVENT_COPY_COLUMNS,
    INSERTED_FIELDS,
    CopyContext,
    CopyText,
    copy_text,
    json_documents,
    sqlite_insert_batch_users,
    sqlite_insert_events,
)
from engine.ingest.temp_tables import (
    CONSENT_COLUMNS,
    TEMP_TABLES,
    batch_users,
    inserted_events,
    staged_events,
    staged_spend,
    staged_users,
    transaction_users,
)
from engine.store.marketing import AdSpend
from engine.store.people import Event, User, UserTag
from engine.store.profiles import (
    flag_stage_dirty,
    lock_users_in_id_order,
    merge_into_profiles,
    refresh_profiles,
)
from engine.store.types import JsonDocument, UTCDateTime

users = User.__table__
user_tags = UserTag.__table__
events = Event.__table__
ad_spend = AdSpend.__table__

USER_COLUMNS = (
    "id",
    "email",
    "phone",
    "name",
    "country",
    "timezone",
    "locale",
    "member_tier",
    "member_since",
    "attributes",
    "email_opt_in",
    "sms_opt_in",
    "ads_opt_in",
    "unsubscribed_at",
    "has_tags",
)
SPEND_COLUMNS = (
    "date",
    "channel",
    "campaign",
    "cost",
    "currency",
    "original_cost",
    "original_currency",
    "ingested_at",
)
SPEND_KEY = ("date", "channel", "campaign")


@dataclass
class PreparedEvents:
    """A batch of events as the database is sent it: SQLite JSON documents, or
    PostgreSQL COPY text (event_staging.py)."""

    documents: list[str] = field(default_factory=list)
    user_ids: str = "[]"  # SQLite: JSON arrays of the batch's users, and of those
    unsubscribed: str = "[]"  # with an unsubscribe event
    copy: CopyText | None = None
    # The batch's users, and those with an unsubscribe event (both backends).
    user_set: set[str] = field(default_factory=set)
    unsubscribed_set: set[str] = field(default_factory=set)


@dataclass
class EventBatchResult:
    inserted: int
    duplicates: int
    users_created: int
    unknown_users: set[str]


# The advisory lock imports take turns on to write users (BatchWriter._take_user_writes_lock).
USER_WRITES_LOCK = 0x6E75646765757372  # "nudgeusr"


class BatchWriter:
    """Writes batches on one connection; owns the TEMP tables of that connection."""

    def __init__(self, connection: Connection, now: datetime):
        self.connection = connection
        self.now = now
        self.is_postgres = connection.dialect.name == "postgresql"
        self.insert = postgresql.insert if self.is_postgres else sqlite.insert
        # The events of the current write transaction (begin_events ... end_events).
        self._batches = 0
        self._before_id: int | None = None
        self._require_users = False
        self._users: set[str] = set()  # the transaction's users so far,
        self._unsubscribed: set[str] = set()  # and those with an unsubscribe event
        self._transaction: object | None = None  # the last one events were written in
        self._transaction_users_filled = False
        self._staged = False  # whether the staging tables hold rows of this transaction
        # PostgreSQL: whether the last batch met events already stored (see add_events).
        self._met_stored = False
        self._copy_context = _copy_context(connection) if self.is_postgres else None

    # -- lifecycle of the temp tables

    def create_temp_tables(self) -> None:
        if not self.is_postgres:
            # A bigger page cache keeps the events indexes in memory during the load, and
            # the staging tables live in memory. Both belong to the SQLite connection,
            # which is therefore taken out of the pool (closed, not returned, at the
            # end): no other user inherits a 64 MB cache. Outside a transaction: SQLite
            # refuses to move a temp store it has already opened within one.
            self.connection.detach()
            sqlite = self.connection.connection.dbapi_connection
            sqlite.execute("PRAGMA cache_size=-65536")
            sqlite.execute("PRAGMA temp_store=MEMORY")
        with self.connection.begin():
            self.drop_temp_tables()
            for table in TEMP_TABLES:
                table.create(self.connection)

    def drop_temp_tables(self) -> None:
        schema = "pg_temp" if self.is_postgres else "temp"
        for table in TEMP_TABLES:
            self.connection.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.{table.name}")

    # -- users

    def write_users(self, rows: Sequence[dict[str, Any]]) -> int:
        """Upsert a batch of user rows: given fields overwrite, missing ones are kept."""
        merged = _merge_by_id(rows)
        self._clear(staged_users)
        self._load(staged_users, [_staged_user(row) for row in merged.values()])
        s = staged_users
        if self.is_postgres:
            self._take_user_writes_lock()
            # The rows updated below, locked first in the order the stage refresh uses.
            updated = sa.select(users.c.id).where(users.c.id.in_(sa.select(s.c.id)))
            lock_users_in_id_order(self.connection, updated)
        given = {
            name: sa.func.coalesce(s.c[name], users.c[name])
            for name in USER_COLUMNS[1:-1]
            if name != "attributes"
        }
        given["attributes"] = sa.func.coalesce(
            self._merge_json(users.c.attributes, s.c.attributes), users.c.attributes
        )
        given["updated_at"] = sa.literal(self.now, UTCDateTime)
        # Tier or member_since may move the user to another stage.
        given["stage_dirty"] = sa.true()
        # Update existing users first, then insert the new ones: an ON CONFLICT DO UPDATE
        # would only see the defaulted values (false consent) instead of "not given".
        self.connection.execute(users.update().where(users.c.id == s.c.id).values(given))
        new_values = [s.c[name] for name in USER_COLUMNS[:-1]]
        new_values[USER_COLUMNS.index("attributes")] = sa.func.coalesce(
            s.c.attributes, sa.literal({}, JsonDocument)
        )
        for name in CONSENT_COLUMNS:
            new_values[USER_COLUMNS.index(name)] = sa.func.coalesce(s.c[name], sa.false())
        stamp = sa.literal(self.now, UTCDateTime)
        # In id order, as every writer creates users (see _create_bare_users).
        source = sa.select(*new_values, stamp, stamp).where(sa.true()).order_by(s.c.id)
        statement = self.insert(users).from_select(
            [*USER_COLUMNS[:-1], "created_at", "updated_at"], source
        )
        self.connection.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
        self._replace_tags(merged.values())
        return len(merged)

    def _merge_json(self, stored: sa.ColumnElement, given: sa.ColumnElement) -> sa.ColumnElement:
        # Top-level keys of the row replace the stored ones, others are kept.
        if self.is_postgres:
            return stored.op("||")(given)
        return sa.func.json_patch(stored, given)

    def _replace_tags(self, rows: Iterable[dict[str, Any]]) -> None:
        tagged = [row for row in rows if row["tags"] is not None]
        if not tagged:
            return
        has_tags = sa.select(staged_users.c.id).where(staged_users.c.has_tags)
        self.connection.execute(user_tags.delete().where(user_tags.c.user_id.in_(has_tags)))
        pairs = [{"user_id": row["id"], "tag": tag} for row in tagged for tag in row["tags"]]
        if pairs:
            self.connection.execute(user_tags.insert(), pairs)

    # -- events

    def prepare_events(self, rows: list[dict[str, Any]]) -> PreparedEvents:
        """What the database is sent for these rows, built without the database.

        The pipeline calls this in its reader thread, so that building the SQLite JSON
        document or the COPY rows overlaps with the writing of the previous batch.
        """
        # The batch's users, as Python sets: one more pass over the rows in SQL would
        # cost the database more.
        user_ids = {row["user_id"] for row in rows}
        unsubscribed = {row["user_id"] for row in rows if row["type"] == "unsubscribe"}
        if self.is_postgres:
            return PreparedEvents(
                copy=copy_text(rows, self.now, self._copy_context),
                user_set=user_ids,
                unsubscribed_set=unsubscribed,
            )
        return PreparedEvents(
            documents=list(json_documents(rows)),
            user_ids=_json_ids(user_ids),
            unsubscribed=_json_ids(unsubscribed),
            user_set=user_ids,
            unsubscribed_set=unsubscribed,
        )

    def write_events(
        self,
        rows: list[dict[str, Any]],
        *,
        require_users: bool,
        prepared: PreparedEvents | None = None,
    ) -> EventBatchResult:
        """Insert a batch of events once each; keep users and profiles in step.

        A write transaction of one batch: `begin_events`, `add_events`, `end_events`,
        in the caller's transaction.
        """
        self.begin_events()
        result = self.add_events(rows, require_users=require_users, prepared=prepared)
        result.users_created += self.end_events()
        return result

    @property
    def batches_share_transactions(self) -> bool:
        """Whether several event batches may share one write transaction.

        Not on Citus, where each batch recomputes the profiles of its users and locks
        them (advisory locks, in id order) as it goes: locks taken batch after batch
        would not be in one order, and could deadlock with a stage refresh.
        """
        return not self._distributed()

    def begin_events(self) -> None:
        """Start the events of one write transaction (one batch or several).

        The users of its events (bare users for unknown ids, stage flags,
        unsubscribes) and the profiles are brought up to date once, by `end_events`,
        for all the events the transaction inserted: a user in several of its batches
        has their rows written once, not once per batch. Events and the profiles that
        include them commit together.
        """
        self._batches = 0
        self._users, self._unsubscribed = set(), set()
        transaction = self.connection.get_transaction()
        if self.is_postgres:
            self._staged = False
            if transaction is self._transaction:
                # Events already written in this transaction (the staging tables empty
                # themselves only at commit).
                names = (batch_users, staged_events, inserted_events, transaction_users)
                self.connection.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in names)}")
        else:
            if self._transaction_users_filled:
                self.connection.execute(transaction_users.delete())
                self._transaction_users_filled = False
            # One writer at a time, and rowids grow: the rows above the largest id
            # before the transaction's first insert are exactly the ones it wrote.
            self._before_id = self.connection.execute(sa.select(sa.func.max(events.c.id))).scalar()
        self._transaction = transaction

    def add_events(
        self,
        rows: list[dict[str, Any]],
        *,
        require_users: bool,
        prepared: PreparedEvents | None = None,
    ) -> EventBatchResult:
        """Insert one batch of events once each (no duplicate of a stored event).

        The rows are staged once (event_staging.py) and inserted by one INSERT ...
        SELECT. Their users and profiles follow when the transaction ends
        (`end_events`, which counts the bare users it creates): profiles grow by the
        events actually inserted (a duplicate skipped by ON CONFLICT adds nothing);
        they are never recomputed from all of a user's events. Under `require_users`,
        the events of unknown users are left out (and returned).
        """
        if not rows:
            return EventBatchResult(0, 0, 0, set())
        if prepared is None:
            prepared = self.prepare_events(rows)
        self._batches += 1
        if self.is_postgres and len(rows) > 5_000:
            # The batch's sorts and the profile aggregation in memory, not spilled to
            # temporary files (4 MB by default; a batch of 50,000 events needs ~20 MB).
            self.connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        distributed = self._distributed()
        # PostgreSQL, the common case: COPY straight into `events`, staging only if that
        # meets a stored row (below). Unknown users and Citus need the staged rows first.
        # So does the batch after one that met stored events: the file likely overlaps
        # what is stored (imported again), and a COPY that fails part-way wastes the
        # rows it wrote and leaves an ERROR in the server's log. A batch that met none
        # sends the next one the COPY way again.
        copy_first = self.is_postgres and not (require_users or distributed or self._met_stored)
        if not copy_first:
            self._stage_events(prepared, with_batch_users=require_users or distributed)
        unknown: set[str] = set()
        created = 0
        if require_users:
            unknown = self._unknown_users()
            if unknown:
                self.connection.execute(
                    batch_users.delete().where(batch_users.c.user_id.in_(unknown))
                )
                rows = [row for row in rows if row["user_id"] not in unknown]
        elif distributed:
            created = self._create_bare_users(batch_users)
        if distributed:
            inserted = self._insert_events(prepared, only_known_users=bool(unknown))
            refresh_profiles(self.connection, sa.select(batch_users.c.user_id), self.now)
            if any(row["type"] == "unsubscribe" for row in rows):
                self._apply_unsubscribes(batch_users)
            return EventBatchResult(inserted, len(rows) - inserted, created, unknown)
        if copy_first:
            copied = self._copy_new_events(prepared.copy)
            if copied is not None:
                inserted = copied
            else:
                self._stage_events(prepared, with_batch_users=False)
                inserted = self._insert_events_returning(only_known_users=False)
        elif self.is_postgres:
            inserted = self._insert_events_returning(only_known_users=bool(unknown))
        else:
            inserted = self._insert_events(prepared, only_known_users=bool(unknown))
        self._met_stored = inserted < len(rows)
        self._users.update(prepared.user_set - unknown if unknown else prepared.user_set)
        self._unsubscribed.update(prepared.unsubscribed_set)
        self._require_users = require_users
        return EventBatchResult(inserted, len(rows) - inserted, created, unknown)

    def end_events(self) -> int:
        """Bring the transaction's users and profiles up to date; the users created.

        Creates bare users for the unknown ids (unless users were required), adds what
        the transaction inserted to the profiles, flags the stages of all its users
        (their profile may have changed) and applies unsubscribes (the latest
        unsubscribe event of each user wins).
        """
        if not self._batches or self._distributed():
            return 0
        if self.is_postgres:
            self._take_user_writes_lock()
        self._fill_transaction_users()
        touched = transaction_users
        created = 0 if self._require_users else self._create_bare_users(touched)
        if self.is_postgres:
            new_rows = inserted_events
        else:
            # MATERIALIZED: a range scan of the new rowids; inlined, SQLite would rather
            # scan all events in (user_id, ...) index order for the GROUP BY.
            new_rows = (
                sa.select(events.c.user_id, events.c.type, events.c.occurred_at, events.c.amount)
                .where(events.c.id > (self._before_id or 0))
                .cte("inserted_events")
                .prefix_with("MATERIALIZED")
            )
        self.connection.execute(merge_into_profiles(self.connection, new_rows, self.now))
        flag_stage_dirty(self.connection, sa.select(touched.c.user_id))
        if self._unsubscribed & self._users:
            self._apply_unsubscribes(touched)
        self._batches = 0
        self._users, self._unsubscribed = set(), set()
        return created

    def _take_user_writes_lock(self) -> None:
        """PostgreSQL: wait until no other import is writing users, then hold that
        turn until this transaction ends.

        A users file updates and creates users, an events file creates the users it
        meets and flags them: each in id order, but one after the other (update, then
        create; create, then flag), so two imports at once could each hold a row the
        other waits for, and PostgreSQL aborted one with a deadlock. Only these last
        steps of an import take turns; reading, converting and inserting events still
        run side by side. (A stage refresh locks in id order and takes no turn: it
        never creates users.)"""
        self.connection.execute(sa.select(sa.func.pg_advisory_xact_lock(USER_WRITES_LOCK)))

    def _fill_transaction_users(self) -> None:
        """`transaction_users` := the transaction's users, each once, from Python's sets."""
        self._transaction_users_filled = True
        unsubscribed = self._unsubscribed & self._users
        if self.is_postgres:
            sql = f"COPY {transaction_users.name} (user_id, unsubscribed) FROM STDIN"
            dbapi = self.connection.connection.driver_connection
            with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
                write = copy.write_row
                for user_id in self._users:
                    write((user_id, user_id in unsubscribed))
            return
        self.connection.exec_driver_sql(
            sqlite_insert_batch_users(transaction_users.name),
            (_json_ids(self._users), _json_ids(unsubscribed)),
        )

    def _distributed(self) -> bool:
        """On Citus, profiles are recomputed per touched user, as before: the
        incremental path's data-modifying CTE is not one Citus plans on shards."""
        from engine.store.distribute import users_distributed

        return users_distributed(self.connection)

    def _stage_events(self, prepared: PreparedEvents, *, with_batch_users: bool) -> None:
        """Stage the batch (PostgreSQL); fill `batch_users` from it if asked."""
        if self.is_postgres:
            if self._staged:
                # The staging tables empty themselves at commit; a later batch of the
                # same transaction empties them itself.
                self.connection.exec_driver_sql(
                    f"TRUNCATE {batch_users.name}, {staged_events.name}"
                )
            self._staged = True
        if not with_batch_users:
            if self.is_postgres:
                self._copy_text(staged_events, EVENT_COPY_COLUMNS, prepared.copy.events)
            return
        self._clear(batch_users)
        if self.is_postgres:
            self._copy_text(staged_events, EVENT_COPY_COLUMNS, prepared.copy.events)
            s = staged_events
            unsubscribed = sa.func.bool_or(s.c.type == "unsubscribe")
            source = sa.select(s.c.user_id, unsubscribed).group_by(s.c.user_id)
            self.connection.execute(
                batch_users.insert().from_select(["user_id", "unsubscribed"], source)
            )
            return
        self.connection.exec_driver_sql(
            sqlite_insert_batch_users(batch_users.name),
            (prepared.user_ids, prepared.unsubscribed),
        )

    def _unknown_users(self) -> set[str]:
        query = sa.select(batch_users.c.user_id).where(
            ~sa.exists().where(users.c.id == batch_users.c.user_id)
        )
        return set(self.connection.execute(query).scalars())

    def _create_bare_users(self, touched: sa.Table) -> int:
        """Anonymous visitors exist before they sign up: an event creates its user.

        `touched` (`batch_users` or `transaction_users`) holds the users of the events."""
        stamp = sa.literal(self.now, UTCDateTime)
        source = sa.select(
            touched.c.user_id,
            sa.literal({}, JsonDocument),
            sa.false(),
            sa.false(),
            sa.false(),
            stamp,
            stamp,
        ).where(
            # Only the unknown ones reach the insert: on PostgreSQL every row an
            # INSERT ... ON CONFLICT tries costs a speculative insertion, and most of a
            # batch's users are known. ON CONFLICT stays for concurrent writers.
            ~sa.exists().where(users.c.id == touched.c.user_id)
        )
        # In id order, so that concurrent writers create the users they share in one order
        # (PostgreSQL could find them deadlocked otherwise).
        source = source.order_by(touched.c.user_id)
        columns = ["id", "attributes", *CONSENT_COLUMNS, "created_at", "updated_at"]
        statement = (
            self.insert(users)
            .from_select(columns, source)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return self._count(statement)

    def _insert_events_returning(self, *, only_known_users: bool) -> int:
        """PostgreSQL: insert the staged events; keep the rows written for `end_events`.

        The ids of concurrent writers interleave, so the insert hands the rows it wrote
        to `inserted_events` directly, in one statement (data-modifying CTE); a
        duplicate skipped by ON CONFLICT is not among them.
        """
        new_rows = (
            self._events_insert(only_known_users)
            .returning(events.c.user_id, events.c.type, events.c.occurred_at, events.c.amount)
            .cte("new_rows")
        )
        statement = inserted_events.insert().from_select(
            ["user_id", "type", "occurred_at", "amount"], sa.select(new_rows)
        )
        return self._count(statement)

    def _insert_events(self, prepared: PreparedEvents, *, only_known_users: bool) -> int:
        """INSERT ... SELECT from the staged batch, in index order; the rows written.

        In index order, the (user_id, ...) indexes are written page by page instead of
        at random (about twice as fast). `only_known_users` keeps the events of the
        users left in `batch_users` (--require-users).
        """
        if not self.is_postgres:
            kept = batch_users.name if only_known_users else None
            statement = sqlite_insert_events(events.name, kept)
            ingested_at = sqlite_instant(self.now)
            inserted = 0
            for document in prepared.documents:
                result = self.connection.exec_driver_sql(
                    statement,
                    (ingested_at, document),
                    execution_options={"preserve_rowcount": True},
                )
                inserted += result.rowcount
            return inserted
        return self._count(self._events_insert(only_known_users))

    def _events_insert(self, only_known_users: bool):
        """PostgreSQL: INSERT INTO events SELECT the staged rows ON CONFLICT DO NOTHING."""
        s = staged_events
        source = sa.select(*(s.c[name] for name in EVENT_COPY_COLUMNS))
        if only_known_users:
            source = source.where(s.c.user_id.in_(sa.select(batch_users.c.user_id)))
        # Code-point order, and COPY order (ctid) for ties, as Python's stable sort of
        # the rows was: the first of two rows sharing a source id is the one stored.
        source = source.order_by(
            s.c.user_id.collate("C"), s.c.type.collate("C"), s.c.occurred_at, sa.column("ctid")
        )
        return (
            postgresql.insert(events)
            .from_select(list(EVENT_COPY_COLUMNS), source)
            .on_conflict_do_nothing(index_elements=["user_id", "source_id"])
        )

    def _copy_new_events(self, text: CopyText) -> int | None:
        """PostgreSQL: COPY the batch straight into `events`; the rows, or None if one of
        them is already stored (or twice in the batch), when nothing was written.

        The fast path: a COPY costs the server about what the INSERT ... SELECT ... ON
        CONFLICT DO NOTHING of the staged rows costs, without the staging and the
        statement's per-row conflict checks and RETURNING. The columns the profiles need
        go to `inserted_events` as RETURNING would have put them. Under a savepoint:
        the unique key refuses a row already stored (by this import's earlier batches,
        a previous import or a concurrent one, which it waits for as ON CONFLICT does),
        and the savepoint's rollback leaves the transaction as it was before the batch,
        for the staging path to decide which rows are new. Every row is new when the
        COPY succeeds, so the order of rows decides nothing; it is index order anyway
        (event_staging.copy_text).
        """
        try:
            with self.connection.begin_nested():
                copied = self._copy_text(events, EVENT_COPY_COLUMNS, text.events)
                self._copy_text(inserted_events, INSERTED_FIELDS, text.inserted)
        except sa.exc.DBAPIError as exc:
            if isinstance(exc.orig, psycopg.errors.UniqueViolation):
                return None
            raise
        return copied

    def _copy_text(self, table: sa.Table, columns: Sequence[str], text: bytes) -> int:
        """COPY text (event_staging.copy_text) into the table, in one buffer; the rows."""
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        dbapi = self.connection.connection.driver_connection
        with dbapi.cursor() as cursor:
            try:
                with cursor.copy(sql) as copy:
                    copy.write(memoryview(text))
            except psycopg.Error as exc:
                # As SQLAlchemy raises it for its own statements: callers (the event
                # API's retry of a deadlock or serialization failure) read exc.orig.
                raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
            return cursor.rowcount

    def _apply_unsubscribes(self, touched: sa.Table) -> None:
        """The latest unsubscribe wins, whatever order the events arrive in.

        `touched` is `batch_users` or `transaction_users`: its flagged users."""
        latest = (
            sa.select(sa.func.max(events.c.occurred_at))
            .where(events.c.user_id == users.c.id, events.c.type == "unsubscribe")
            .scalar_subquery()
        )
        flagged = sa.select(touched.c.user_id).where(touched.c.unsubscribed)
        self.connection.execute(
            users.update()
            .where(users.c.id.in_(flagged))
            .where(sa.or_(users.c.unsubscribed_at.is_(None), users.c.unsubscribed_at < latest))
            .values(unsubscribed_at=latest, updated_at=sa.literal(self.now, UTCDateTime))
        )

    # -- ad spend

    def write_spend(self, rows: list[dict[str, Any]]) -> int:
        """Upsert a batch of spend rows: a (date, channel, campaign) already stored is
        replaced (its cost, currencies and ingested_at). Keys are unique in a batch
        (the pipeline rejects a key given twice in a file)."""
        if not rows:
            return 0
        for row in rows:
            row["ingested_at"] = self.now
        if not self.is_postgres:
            statement = sqlite.insert(ad_spend)
            statement = statement.on_conflict_do_update(
                index_elements=list(SPEND_KEY), set_=_replaced(statement)
            )
            self.connection.execute(statement, rows)
            return len(rows)
        self._copy(staged_spend, SPEND_COLUMNS, rows)
        source = sa.select(*(staged_spend.c[name] for name in SPEND_COLUMNS))
        statement = postgresql.insert(ad_spend).from_select(list(SPEND_COLUMNS), source)
        statement = statement.on_conflict_do_update(
            index_elements=list(SPEND_KEY), set_=_replaced(statement)
        )
        return self._count(statement)

    # -- loading helpers

    def _count(self, statement: sa.Executable, rows: list[dict[str, Any]] | None = None) -> int:
        """Rows an INSERT wrote (SQLAlchemy keeps INSERT rowcounts only when asked)."""
        statement = statement.execution_options(preserve_rowcount=True)
        return self.connection.execute(statement, rows).rowcount

    def _clear(self, table: sa.Table) -> None:
        if not self.is_postgres:  # PostgreSQL staging empties itself on commit
            self.connection.execute(table.delete())

    def _load(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.is_postgres:
            self._copy(table, tuple(rows[0]), rows)
        else:
            self.connection.execute(table.insert(), rows)

    def _copy(self, table: sa.Table, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
        """COPY rows into a staging table; JSON columns are sent as their text."""
        json_columns = {
            name for name in columns if isinstance(table.c[name].type, sa.JSON | postgresql.JSONB)
        }
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        dbapi = self.connection.connection.driver_connection
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            write = copy.write_row
            if json_columns:
                for row in rows:
                    write([_json_text(row[c]) if c in json_columns else row[c] for c in columns])
            else:
                for row in rows:
                    write([row[c] for c in columns])


def _copy_context(connection: Connection) -> CopyContext:
    """The adapters of the connection, for the reader thread to format COPY text with."""
    dbapi = connection.connection.driver_connection
    if dbapi.info.encoding == "utf-8":
        return CopyContext(dbapi.adapters)
    return CopyContext(dbapi.adapters, dbapi)


def _replaced(statement) -> dict[str, Any]:
    """ON CONFLICT DO UPDATE: the spend row of the import replaces the stored one."""
    return {name: statement.excluded[name] for name in SPEND_COLUMNS if name not in SPEND_KEY}


def _json_ids(ids: Iterable[str]) -> str:
    return orjson.dumps(list(ids)).decode()


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str).decode("utf-8")


def sqlite_instant(value: datetime) -> str:
    """An instant as UTCDateTime stores it on SQLite: naive UTC, microseconds, a space.

    Same text as SQLAlchemy's SQLite DATETIME format, so lexical order is time order
    and comparisons with bound datetimes work (a test pins the equality).
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _merge_by_id(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per user id; a later row's given fields win (the file is read in order)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = merged.get(row["id"])
        if current is None:
            merged[row["id"]] = dict(row)
            continue
        for key, value in row.items():
            if value is None:
                continue
            if key == "attributes" and current["attributes"] is not None:
                current["attributes"] = {**current["attributes"], **value}
            else:
                current[key] = value
    return merged


def _staged_user(row: dict[str, Any]) -> dict[str, Any]:
    staged = {name: row[name] for name in USER_COLUMNS[:-1]}
    staged["has_tags"] = row["tags"] is not None
    return staged
