"""A batch of event rows staged for the database to convert, not Python.

Per-row conversion in Python (instants to text, Decimals to floats, properties to
JSON text, one tuple per row) used to cost more than the insert itself, and it held
the GIL while the reader thread wanted it. Instead:

- SQLite: the whole batch is ONE JSON document, an array of rows, each row an array
  of its column values (orjson serialises them in C), bound as ONE parameter;
  `json_each` + `json_extract(value, '$[i]')` turn it back into columns inside a single
  INSERT ... SELECT, which runs without the GIL. Arrays rather than objects: finding a
  value by position costs SQLite a fraction of finding it by key (per row, an object
  cost ~5 us more, as much as the rest of the conversion). Not executemany either:
  sqlite3 takes the GIL back for every row, and with the reader thread busy each row
  then waits for it (6x slower measured).
- PostgreSQL: the rows as COPY text (`copy_text`), sent to the server in one buffer:
  straight into `events` when none of them is stored yet, else into a TEMP staging
  table and set-based SQL from there (writers.py).

The document (or the COPY text) is built by `json_documents` (`copy_text`), in the
reader thread when the pipeline prepares a batch (writers.py `prepare_events`). The
document stores exactly what the column types stored before: instants as
UTCDateTime's naive-UTC text with microseconds, amounts as the float of the Decimal
(sent as integer cents and divided by 100.0 in SQL: one correctly rounded IEEE
division, so the same double as `float(Decimal)`), properties as orjson's text
(SQLite re-renders a JSON sub-object minified and token for token, which is orjson's
output).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson
from psycopg.adapt import Transformer

try:  # psycopg's COPY text formatter (C with psycopg[binary]); its module moved in 3.2
    from psycopg._copy_base import format_row_text
except ImportError:  # pragma: no cover
    from psycopg.copy import format_row_text  # type: ignore[attr-defined,no-redef]

# Columns of an event row, in the order of the INSERT (id is generated; ingested_at is
# one bound value per batch, not a value per row).
EVENT_FIELDS = (
    "source_id",
    "user_id",
    "type",
    "occurred_at",
    "amount",
    "currency",
    "original_amount",
    "original_currency",
    "order_id",
    "coupon_code",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "properties",
)
MONEY_FIELDS = ("amount", "original_amount")
# SQLite refuses strings longer than SQLITE_MAX_LENGTH (1e9 bytes by default). A batch
# is normally a few MB; one of huge properties is split well below the limit.
MAX_DOCUMENT_BYTES = 64 * 2**20


def _cents(value: Any) -> int:
    """orjson's fallback: validated amounts are Decimals with at most 2 decimals."""
    if isinstance(value, Decimal):
        cents = value.scaleb(2)
        if cents == cents.to_integral_value():
            return int(cents)
        raise ValueError(f"amount {value} has more than 2 decimals")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _in_utc(rows: Sequence[dict[str, Any]], *, naive: bool = False) -> Sequence[dict[str, Any]]:
    """Rows whose instants are UTC (what `event_row` returns), converting any other.

    A naive instant is refused, unless `naive` (PostgreSQL's COPY has always handed it
    to the server as it is, to read in the session's time zone)."""
    converted: list[dict[str, Any]] | None = None
    for index, row in enumerate(rows):
        at = row["occurred_at"]
        if at.tzinfo is UTC:
            continue
        if at.tzinfo is None:
            if naive:
                continue
            raise ValueError(f"naive datetime {at.isoformat()} cannot be stored")
        if converted is None:
            converted = list(rows)
        converted[index] = {**row, "occurred_at": at.astimezone(UTC)}
    return rows if converted is None else converted


def index_order(row: dict[str, Any]) -> tuple[str, str, datetime]:
    """The order rows are inserted in: that of the (user_id, type, occurred_at) index."""
    return row["user_id"], row["type"], row["occurred_at"]


_ROW_VALUES = itemgetter(*EVENT_FIELDS)


def json_documents(rows: Sequence[dict[str, Any]]) -> Iterator[str]:
    """The rows as JSON arrays of row arrays: one document, or several in index order.

    Several documents, each inserted in index order, give the same insert order (and
    so the same winner among rows sharing a source id) as one sorted document.
    """
    rows = _in_utc(rows)
    document = orjson.dumps(list(map(_ROW_VALUES, rows)), default=_cents)
    if len(document) <= MAX_DOCUMENT_BYTES:
        yield document.decode("utf-8")  # text: SQLite 3.45+ reads a BLOB as JSONB
        return
    del document
    parts: list[bytes] = []
    size = 0
    for row in sorted(rows, key=index_order):
        part = orjson.dumps(_ROW_VALUES(row), default=_cents)
        if parts and size + len(part) > MAX_DOCUMENT_BYTES:
            yield _array(parts)
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield _array(parts)


def _array(parts: list[bytes]) -> str:
    return (b"[" + b",".join(parts) + b"]").decode("utf-8")


def _field(name: str) -> str:
    # Positions are constants of this module (column ordinals), never input.
    return f"json_extract(value, '$[{EVENT_FIELDS.index(name)}]')"


def _column_sql(name: str) -> str:
    value = _field(name)
    if name == "occurred_at":
        # orjson writes a UTC instant as 2026-03-01T10:00:00[.ffffff]+00:00; UTCDateTime
        # stores 2026-03-01 10:00:00.ffffff (naive UTC, always six digits).
        return (
            f"substr({value}, 1, 10) || ' ' || substr({value}, 12, 8) || "
            f"CASE WHEN substr({value}, 20, 1) = '.' THEN substr({value}, 20, 7) "
            "ELSE '.000000' END"
        )
    if name in MONEY_FIELDS:
        return f"{value} / 100.0"
    return value


def _ordinal(name: str) -> int:
    return EVENT_FIELDS.index(name) + 1


def sqlite_insert_events(table: str, only_users_in: str | None) -> str:
    """INSERT ... SELECT FROM json_each(?): parameters (ingested_at text, document).

    In index order (written page by page rather than at random, about twice as fast),
    ties in document order, as Python's stable sort did. `only_users_in` names a table
    of the user ids whose events are kept (--require-users).
    """
    columns = ", ".join(EVENT_FIELDS)
    selected = ", ".join(_column_sql(name) for name in EVENT_FIELDS)
    kept = f"{_field('user_id')} IN (SELECT user_id FROM {only_users_in})" if only_users_in else ""
    order = ", ".join(str(_ordinal(name)) for name in ("user_id", "type", "occurred_at"))
    return (
        f"INSERT INTO {table} ({columns}, ingested_at) "
        f"SELECT {selected}, ? FROM json_each(?) WHERE {kept or 'true'} "
        f"ORDER BY {order}, key "
        "ON CONFLICT (user_id, source_id) DO NOTHING"
    )


def sqlite_insert_batch_users(table: str) -> str:
    """The batch's users and which of them unsubscribed: parameters (two JSON arrays of ids).

    Arrays of strings: json_each hands each id over as it is, nothing to re-parse.
    """
    return (
        f"INSERT INTO {table} (user_id, unsubscribed) "
        "SELECT value, value IN (SELECT value FROM json_each(?2)) FROM json_each(?1)"
    )


# -- PostgreSQL: COPY text, formatted in the reader thread

# The columns of a COPY into `events` (or into the staging table, which has the same
# ones): one text buffer serves both, the fast path and its fallback (writers.py).
EVENT_COPY_COLUMNS = (*EVENT_FIELDS, "ingested_at")
# What the profile upkeep reads of each inserted event (temp_tables.inserted_events).
INSERTED_FIELDS = ("user_id", "type", "occurred_at", "amount")

# The columns around occurred_at (sent as text) and before properties (the last one,
# sent as JSON text).
_BEFORE_INSTANT = itemgetter(*EVENT_FIELDS[: EVENT_FIELDS.index("occurred_at")])
_AFTER_INSTANT = itemgetter(*EVENT_FIELDS[EVENT_FIELDS.index("occurred_at") + 1 : -1])


@dataclass
class CopyText:
    """A batch as COPY text (bytes), its rows in index order."""

    events: bytes  # EVENT_COPY_COLUMNS of each row
    inserted: bytes  # INSERTED_FIELDS of each row


class CopyContext:
    """What psycopg's formatter needs to turn values into COPY text: the adapters of the
    connection, and none of its state (the formatter runs in the reader thread while
    the writer thread uses the connection). Without a connection, psycopg encodes text
    as UTF-8; `connection` is given only when the connection's encoding is another
    one (its dumpers read it once, when they are made)."""

    def __init__(self, adapters: Any, connection: Any = None):
        self.adapters = adapters
        self.connection = connection


def copy_text(
    rows: Sequence[dict[str, Any]], ingested_at: datetime, context: CopyContext
) -> CopyText:
    """The COPY text of the rows, sorted in index order (ties in row order).

    Formatted by psycopg's own COPY formatter (C, the one `Copy.write_row` uses: it
    escapes tabs, newlines and backslashes), but here, in the reader thread, ahead of
    the write: the writer thread then sends one buffer per table and waits on the
    server with the GIL released. In index order, as the INSERT ... SELECT of the
    staging path orders them (code-point order: Python compares str by code point,
    as PostgreSQL's "C" collation compares UTF-8 bytes), so that the (user_id, ...)
    indexes are written page by page, and a fallback keeps the same winner among rows
    sharing a source id.
    """
    rows = _in_utc(rows, naive=True)
    # Instants as RFC 3339 text (orjson, in C, for the whole batch: ~20x faster than
    # psycopg's datetime dumper per value). All in UTC and always with six digits of
    # microseconds when any, so that their text order is their time order ('+' sorts
    # before '.': a whole second before the same second and a fraction).
    dumps = orjson.dumps
    instants: list[str] = orjson.loads(dumps([row["occurred_at"] for row in rows]))
    stamp = ingested_at.astimezone(UTC).isoformat()
    # One string per sort key, its parts joined by NUL: no stored text holds NUL
    # (values.storable), which sorts before every other character, so these order as
    # the (user_id, type, instant) tuples would, at a fifth of the cost of comparing
    # tuples.
    keys = [
        f"{row['user_id']}\0{row['type']}\0{at}" for row, at in zip(rows, instants, strict=True)
    ]
    transformer = Transformer(context)
    events_text, inserted_text = bytearray(), bytearray()
    for index in sorted(range(len(rows)), key=keys.__getitem__):
        row = rows[index]
        at = instants[index]
        properties = dumps(row["properties"]).decode("utf-8")
        values = (*_BEFORE_INSTANT(row), at, *_AFTER_INSTANT(row), properties, stamp)
        format_row_text(values, transformer, events_text)
        inserted = (row["user_id"], row["type"], at, row["amount"])
        format_row_text(inserted, transformer, inserted_text)
    return CopyText(bytes(events_text), bytes(inserted_text))
