"""The ingest pipeline: open inputs -> read records -> validate -> write in batches.

Three kinds of file: users, events and ad spend (docs/ingest.md).

Bad rows become rejects (file:line + reason) and never stop the good ones; a file
that cannot be read at all is an `IngestError` raised before anything is written.
Batches are committed one transaction each, so memory stays flat and an interrupted
import can simply be run again (events are stored once, users are upserts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Full, Queue

from engine.clock import ensure_aware
from engine.config import Settings
from engine.errors import IngestError
from engine.ingest.import_mode import import_mode
from engine.ingest.money import ShopCurrency
from engine.ingest.readers import Record, Source, iter_sources, raw_text
from engine.ingest.records import (
    EVENT_TIME_KEYS,
    EVENT_USER_KEYS,
    SPEND_KEYS,
    SPEND_REQUIRED,
    event_row,
    spend_row,
    user_row,
)
from engine.ingest.report import FileReport, IngestReport, Reject, RejectsWriter
from engine.ingest.values import RowError
from engine.ingest.writers import BatchWriter, PreparedEvents
from engine.store.changes import signal_change
from engine.store.database import Store

KINDS = ("users", "events", "spend")
# Large enough that per-batch statements are amortised: each batch upserts the profile
# of every user it touches, and commits. The batches in flight (one written, one
# queued, one being read) bound memory, whatever the file.
BATCH_SIZE = 50_000
# A file's first batches are smaller, doubling up to BATCH_SIZE: the writer starts
# after 6,250 rows are read instead of 50,000, and each next batch is read while the
# previous one (half its size, about twice as slow to write as to read) is written.
FIRST_BATCH_SIZE = 6_250
# Events batches share a write transaction until it holds this many batches' worth of
# rows (TRANSACTION_BATCHES x BATCH_SIZE) or has been open for TRANSACTION_SECONDS:
# the profiles, stage flags and unsubscribes of its users are written once when it
# ends, instead of once per batch (with 50,000 events over 100,000 users, most users
# are in every batch, and each profile row written costs about as much as inserting
# an event). Memory stays flat: a batch's rows are let go once written. The time
# bound keeps new events reaching the daemons, and, on SQLite, keeps the one write
# lock from being held for longer than a writer waits for it (busy_timeout, 30 s):
# a transaction ends at the first batch written after TRANSACTION_SECONDS.
# PostgreSQL's are larger: no other writer waits for its transaction (row locks, not a
# database lock), and its profile upkeep costs per user touched, once per transaction
# (1M events over 100k users: 7.1 s in two transactions of 500k, against ~4 in one).
TRANSACTION_BATCHES = {"sqlite": 10, "postgresql": 20}
TRANSACTION_SECONDS = {"sqlite": 10.0, "postgresql": 60.0}


def ingest_files(
    store: Store,
    paths: list[Path | str],
    *,
    now: datetime,
    kind: str | None = None,
    rejects_path: Path | None = None,
    require_users: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest users, events and ad spend files ("-" is stdin); return what happened.

    `now` stamps users.updated_at, events.ingested_at and ad_spend.ingested_at.
    `kind` forces "users", "events" or "spend" instead of detecting it from the
    columns. Rejected rows go to `rejects_path`, or to `<input>.rejects.jsonl` next
    to each input (`stdin.rejects.jsonl` in the working directory for stdin).
    `progress` is called with the number of rows processed since its previous call.
    """
    ensure_aware(now)
    if kind is not None and kind not in KINDS:
        raise IngestError(f"unknown kind {kind!r}: use users, events or spend")
    if not paths:
        raise IngestError("no input files given")
    sources = iter_sources(paths)
    report = IngestReport()
    rejects = RejectsWriter()
    try:
        kinds = [(source, _kind_of(source, kind)) for source in sources]
        # Users first, whatever the order on the command line, so that events of users
        # in the same import are not "unknown" under --require-users.
        kinds.sort(key=lambda pair: pair[1] != "users")
        with import_mode(), store.engine.connect() as connection:
            writer = BatchWriter(connection, now)
            writer.create_temp_tables()
            try:
                for source, source_kind in kinds:
                    target = rejects_path or default_rejects_path(source)
                    run = _FileRun(writer, report, rejects, target, progress)
                    run.ingest(source, source_kind, store.settings, require_users)
            finally:
                if connection.in_transaction():
                    connection.rollback()
                with connection.begin():
                    writer.drop_temp_tables()
    finally:
        rejects.close()
        for source in sources:
            source.close()
    report.rejects_paths = rejects.paths
    if report.events_inserted:
        # Purchases carrying coupon codes redeem them now, so a redeemed coupon is
        # never offered again and attribution sees the redemption.
        from engine.coupons.redeem import redeem_coupons

        report.coupons = dict(redeem_coupons(store, now=now).counts)
    return report


def default_rejects_path(source: Source) -> Path:
    if source.path is None:
        return Path.cwd() / "stdin.rejects.jsonl"
    return source.path.with_name(source.path.name + ".rejects.jsonl")


def _kind_of(source: Source, forced: str | None) -> str:
    keys = source.keys()
    if forced is not None:
        kind = forced
    elif keys is None:
        return "events"  # empty input: nothing will be written either way
    elif "type" in keys:
        kind = "events"
    elif "id" in keys:
        kind = "users"
    elif "cost" in keys:
        kind = "spend"
    else:
        raise IngestError(
            f"{source.name}: cannot tell whether it holds users, events or ad spend: users "
            "need an 'id' column, events need 'user', 'type' and 'at', spend needs 'date', "
            "'channel' and 'cost' (or pass --kind)"
        )
    if source.header is not None:
        _check_columns(source, kind)
    return kind


def _check_columns(source: Source, kind: str) -> None:
    """A CSV without a required column would reject every row: say it once instead."""
    header = set(source.header or ())
    if kind == "spend":
        unknown = [name for name in source.header or () if name not in SPEND_KEYS]
        if unknown:
            raise IngestError(
                f"{source.name}: unknown spend column(s) "
                f"{', '.join(repr(name) for name in unknown)}: spend files have "
                f"{', '.join(SPEND_KEYS)}"
            )
        required = [(name,) for name in SPEND_REQUIRED]
    elif kind == "users":
        required = [("id",)]
    else:
        required = [EVENT_USER_KEYS, ("type",), EVENT_TIME_KEYS]
    missing = [names[0] for names in required if not header.intersection(names)]
    if missing:
        columns = ", ".join(repr(name) for name in missing)
        raise IngestError(f"{source.name}: a {kind} file needs the column(s) {columns}")


@dataclass
class _Batch:
    """Rows validated from one stretch of a file, with the rejects found on the way."""

    rows: list[dict] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rows_read: int = 0
    # Events: what the database will be sent, built in the reader thread.
    prepared: PreparedEvents | None = None


def _batches(source: Source, kind: str, settings: Settings) -> Iterator[_Batch]:
    zone = settings.tz
    shop_currency = ShopCurrency.of(settings)
    name = source.name
    # Spend: where each (date, channel, campaign) was first given in this file. A key
    # given twice is a reject, never a silent "last row wins" (or a sum that a
    # re-import, which replaces, would not reproduce).
    spend_keys: dict[tuple, int] = {}
    batch = _Batch()
    size = min(FIRST_BATCH_SIZE, BATCH_SIZE)
    for record in source.records():
        batch.rows_read += 1
        if record.data is None:
            batch.rejects.append(Reject(name, record.line, record.error or "", raw_text(record)))
            continue
        try:
            if kind == "users":
                row = user_row(record.data, zone)
            elif kind == "spend":
                row = spend_row(record.data, shop_currency)
                _first_of_key(spend_keys, row, record.line)
            else:
                row = event_row(record.data, zone, shop_currency)
        except RowError as exc:
            batch.rejects.append(Reject(name, record.line, str(exc), raw_text(record)))
            continue
        batch.rows.append(row)
        batch.records.append(record)
        if len(batch.rows) >= size:
            yield batch
            batch = _Batch()
            size = min(2 * size, BATCH_SIZE)
    yield batch


def _first_of_key(seen: dict[tuple, int], row: dict, line: int) -> None:
    key = (row["date"], row["channel"], row["campaign"])
    first = seen.setdefault(key, line)
    if first != line:
        campaign = f"campaign {row['campaign']!r}" if row["campaign"] else "no campaign"
        raise RowError(
            f"{row['date']} / {row['channel']!r} / {campaign} is already given on line "
            f"{first}: one row per date, channel and campaign"
        )


def _prefetched(items: Iterator[_Batch], depth: int = 1) -> Iterator[_Batch]:
    """Read and validate the next batches in a thread while this one is written.

    sqlite3 and psycopg release the GIL while the database works, so parsing the next
    batch overlaps with writing this one; the queue bound keeps memory flat.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item: object) -> bool:
        # Never block for good: the consumer may have stopped (a database error).
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)

    thread = threading.Thread(target=produce, name="nudge-ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _FileRun:
    """Writes the batches of one source and accounts for every row."""

    def __init__(
        self,
        writer: BatchWriter,
        report: IngestReport,
        rejects: RejectsWriter,
        rejects_path: Path,
        progress: Callable[[int], None] | None,
    ):
        self.writer = writer
        self.report = report
        self.rejects = rejects
        self.rejects_path = rejects_path
        self.progress = progress

    def ingest(self, source: Source, kind: str, settings: Settings, require_users: bool) -> None:
        self.file = FileReport(file=source.name, kind=kind, format=source.format)
        self.report.files.append(self.file)
        batches = _batches(source, kind, settings)
        if kind == "events":
            batches = self._prepared(batches)
        shared: bool | None = None  # known once a transaction is open (it may ask)
        # Batches written in the open transaction, with their rejects: accounted for
        # (rejects file, report, progress) once it commits.
        written: list[tuple[int, list[Reject]]] = []
        rows = 0
        transaction = None
        connection = self.writer.connection
        seconds = TRANSACTION_SECONDS.get(connection.dialect.name, 10.0)
        most_rows = TRANSACTION_BATCHES.get(connection.dialect.name, 10) * BATCH_SIZE
        opened = 0.0
        try:
            for batch in _prefetched(batches):
                if batch.rows and transaction is None:
                    transaction = connection.begin()
                    opened = time.monotonic()
                    if kind == "events":
                        self.writer.begin_events()
                    if shared is None:
                        shared = kind == "events" and self.writer.batches_share_transactions
                rejects = self._write(source.name, kind, batch, require_users)
                # Only what the report needs is kept: the rows go (memory stays flat
                # however many batches the transaction holds).
                written.append((batch.rows_read, rejects))
                rows += len(batch.rows)
                del batch
                if transaction is not None and (
                    not shared or rows >= most_rows or time.monotonic() - opened >= seconds
                ):
                    self._commit(kind, transaction)
                    transaction, rows = None, 0
                if transaction is None:
                    self._account(written)
                    written = []
            if transaction is not None:
                self._commit(kind, transaction)
                transaction = None
            self._account(written)
        finally:
            if transaction is not None and transaction.is_active:
                transaction.rollback()
        self.report.rows_read += self.file.rows_read

    def _prepared(self, batches: Iterator[_Batch]) -> Iterator[_Batch]:
        """Events batches with their database payload (runs in the reader thread)."""
        for batch in batches:
            if batch.rows:
                batch.prepared = self.writer.prepare_events(batch.rows)
            yield batch

    def _write(self, name: str, kind: str, batch: _Batch, require_users: bool) -> list[Reject]:
        """Write the batch in the open transaction; its rejects, unknown users included."""
        rejects = batch.rejects
        if not batch.rows:
            return rejects
        if kind == "users":
            self.report.users_upserted += self.writer.write_users(batch.rows)
        elif kind == "spend":
            self.report.spend_upserted += self.writer.write_spend(batch.rows)
        else:
            result = self.writer.add_events(
                batch.rows, require_users=require_users, prepared=batch.prepared
            )
            self.report.events_inserted += result.inserted
            self.report.duplicates_skipped += result.duplicates
            self.report.users_created += result.users_created
            if result.unknown_users:
                rejects = rejects + [
                    Reject(
                        name,
                        record.line,
                        f"unknown user {row['user_id']!r}",
                        raw_text(record),
                    )
                    for row, record in zip(batch.rows, batch.records, strict=True)
                    if row["user_id"] in result.unknown_users
                ]
        return rejects

    def _commit(self, kind: str, transaction) -> None:
        if kind == "events":
            self.report.users_created += self.writer.end_events()
        if kind != "spend":  # no rule reads ad spend
            # Wakes the daemons: new data may give rules something to do.
            signal_change(self.writer.connection)
        transaction.commit()

    def _account(self, written: list[tuple[int, list[Reject]]]) -> None:
        """Report committed batches (rows read, rejects). Rejects are written after their
        batch commits and in line order, so the rejects file lists exactly the rows not
        in the store."""
        for rows_read, rejects in written:
            for reject in sorted(rejects, key=lambda r: r.line):
                self.rejects.write(self.rejects_path, reject)
                self.report.add_reject(reject)
            self.file.rows_read += rows_read
            self.file.rejected += len(rejects)
            if self.file.rejected:
                self.file.rejects_path = str(self.rejects_path)
            if self.progress is not None and rows_read:
                self.progress(rows_read)
