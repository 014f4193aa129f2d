"""The event API: `POST /v1/events` and `POST /v1/users` (docs/serve.md, "Event API").

A request holds one record (a JSON object) or a batch (a JSON array of at most
`MAX_BATCH`) in the JSONL ingest schema (docs/ingest.md). Each item goes through the
ingest validation (`event_row` / `user_row`); the good ones are written in ONE
transaction by the ingest `BatchWriter`, with `signal_change` so the daemons wake.
The answer lists one result per item, in order: stored, duplicate (an event whose
(user, id) is already stored, or given earlier in the batch) or rejected (the
validator's reason). Events of unknown users create them, as file ingest does.

Authentication: `Authorization: Bearer <token>`, compared in constant time with
NUDGE_API_TOKEN; without it configured every /v1 route answers 503.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.ingest.money import ShopCurrency
from engine.ingest.records import event_row, user_row
from engine.ingest.temp_tables import TEMP_TABLES
from engine.ingest.values import RowError
from engine.ingest.writers import BatchWriter, events
from engine.serve.safety import TokenBucket
from engine.store.changes import signal_change
from engine.store.database import Store

API_TOKEN_ENV = "NUDGE_API_TOKEN"
MAX_BATCH = 1_000
API_BODY_BYTES = 2 * 1024 * 1024  # a full batch of typical events fits with room to spare
API_BURST = 60
API_RATE = 10.0  # per second and client IP, per process


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _result(index: int, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "status": status, "reason": reason}


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {"stored": 0, "duplicate": 0, "rejected": 0}
    for result in results:
        counts[result["status"]] += 1
    return {**counts, "results": results}


# Attempts at a batch that raced with another writer (`_Raced`, or a PostgreSQL deadlock).
WRITE_ATTEMPTS = 5


class _Raced(Exception):
    """Another transaction stored some of the batch's events between the duplicate check
    and the insert; the transaction is rolled back and the batch checked again."""


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled
# back for another one's sake and succeeds when run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, _Raced):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


def store_events(store: Store, items: list[Any], *, now: datetime) -> list[dict[str, Any]]:
    """Validate and store a batch of event records; one result per item, in order."""
    settings = store.settings
    zone, currency = settings.tz, ShopCurrency.of(settings)
    results: list[dict[str, Any] | None] = [None] * len(items)
    good: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results[index] = _result(index, "rejected", "an event must be a JSON object")
            continue
        try:
            good.append((index, event_row(item, zone, currency)))
        except RowError as exc:
            results[index] = _result(index, "rejected", str(exc))
    fresh: list[dict[str, Any]] = []
    if good:
        with store.connect() as connection, _batch_writer(connection, now) as writer:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    fresh = _write_batch(connection, writer, good, results)
                    break
                except (_Raced, sa.exc.DBAPIError) as exc:
                    if not _retryable(exc) or attempt == WRITE_ATTEMPTS:
                        raise
    if any(row["coupon_code"] for row in fresh):
        # As file ingest does: a purchase with a coupon code redeems it now.
        from engine.coupons.redeem import redeem_coupons

        redeem_coupons(store, now=now)
    return [result for result in results if result is not None]


@contextmanager
def _batch_writer(connection: sa.Connection, now: datetime) -> Iterator[BatchWriter]:
    """The ingest writer on this connection, with its TEMP staging tables.

    SQLite connections are not pooled (a new one per request): the tables are made and
    dropped each time. A pooled PostgreSQL connection keeps them (they empty themselves
    at each commit), so later requests on it skip the DDL, which cost as much as the
    duplicate check per batch.
    """
    writer = BatchWriter(connection, now)
    keep = connection.dialect.name == "postgresql"
    if not (keep and _has_temp_tables(connection)):
        writer.create_temp_tables()
    try:
        yield writer
    finally:
        if connection.in_transaction():
            connection.rollback()
        if not keep:
            with connection.begin():
                writer.drop_temp_tables()


def _has_temp_tables(connection: sa.Connection) -> bool:
    # Checked, not remembered: another user of the pooled connection (the click
    # recorder, engine/serve/events.py) drops them when it is done.
    checks = " AND ".join(
        f"to_regclass('pg_temp.{table.name}') IS NOT NULL" for table in TEMP_TABLES
    )
    with connection.begin():
        return bool(connection.exec_driver_sql(f"SELECT {checks}").scalar())


def _write_batch(
    connection: sa.Connection,
    writer: BatchWriter,
    good: list[tuple[int, dict[str, Any]]],
    results: list[dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """One transaction: each valid event is a duplicate or stored; the stored ones are
    written and returned. Raises `_Raced` (rolled back) when the insert wrote fewer rows
    than the check promised: on PostgreSQL the check cannot see another transaction's
    uncommitted insert of the same event, whose commit then makes ours skip the row."""
    with connection.begin():
        seen = _stored_keys(connection, [row for _, row in good])
        fresh: list[dict[str, Any]] = []
        for index, row in good:
            key = (row["user_id"], row["source_id"])
            if key in seen:
                results[index] = _result(index, "duplicate", "already stored")
                continue
            seen.add(key)
            fresh.append(row)
            results[index] = _result(index, "stored")
        if fresh:
            # In user order, so that concurrent batches create and update the same users
            # in the same order (in any order, PostgreSQL may find them deadlocked).
            ordered = sorted(fresh, key=lambda row: row["user_id"])
            result = writer.write_events(ordered, require_users=False)
            if result.inserted != len(fresh):
                raise _Raced
            # Wakes the daemons: new data may give rules something to do.
            signal_change(connection)
    return fresh


def _stored_keys(connection: sa.Connection, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The (user_id, source_id) pairs of these rows that are already stored: one probe of
    the unique (user_id, source_id) index per pair. (Two separate INs, users and ids,
    made SQLite probe every combination: 250,000 lookups for a batch of 500.)"""
    wanted = sorted({(row["user_id"], row["source_id"]) for row in rows})
    if connection.dialect.name == "postgresql":
        # A join with the pairs as two arrays: PostgreSQL plans a list of row values as
        # an OR of 500 conditions, several times slower.
        query = _STORED_PAIRS_PG.bindparams(
            users=[user for user, _ in wanted], sources=[source for _, source in wanted]
        )
    else:
        key = sa.tuple_(events.c.user_id, events.c.source_id)
        query = sa.select(events.c.user_id, events.c.source_id).where(key.in_(wanted))
    return {(r.user_id, r.source_id) for r in connection.execute(query)}


_STORED_PAIRS_PG = sa.text(
    "SELECT e.user_id, e.source_id FROM unnest(:users, :sources) AS k(user_id, source_id) "
    "JOIN events AS e ON e.user_id = k.user_id AND e.source_id = k.source_id"
).bindparams(
    sa.bindparam("users", type_=postgresql.ARRAY(sa.String)),
    sa.bindparam("sources", type_=postgresql.ARRAY(sa.String)),
)


def store_users(store: Store, items: list[Any], *, now: datetime) -> list[dict[str, Any]]:
    """Validate and upsert a batch of user records; one result per item, in order."""
    zone = store.settings.tz
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results.append(_result(index, "rejected", "a user must be a JSON object"))
            continue
        try:
            rows.append(user_row(item, zone))
        except RowError as exc:
            results.append(_result(index, "rejected", str(exc)))
            continue
        results.append(_result(index, "stored"))
    if rows:
        with store.connect() as connection, _batch_writer(connection, now) as writer:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    with connection.begin():
                        writer.write_users(rows)
                        signal_change(connection)
                    break
                except sa.exc.DBAPIError as exc:
                    if not _retryable(exc) or attempt == WRITE_ATTEMPTS:
                        raise
    return results


def api_routes(
    store: Store,
    *,
    token: bytes | None,
    limiter: TokenBucket,
    now: Callable[[], datetime],
) -> list[Route]:
    """The /v1 routes; `token` None disables them (503)."""

    async def guard(request: Request) -> Response | None:
        if token is None:
            return _error(503, f"API disabled: set {API_TOKEN_ENV}")
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            return _error(
                429, "too many requests", headers={"retry-after": str(limiter.retry_after())}
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            return _error(
                401, "missing or invalid bearer token", headers={"www-authenticate": "Bearer"}
            )
        return None

    async def items_of(request: Request) -> list[Any] | Response:
        try:
            payload = json.loads(await request.body())
        except (ValueError, RecursionError):
            return _error(400, "the body is not valid JSON")
        if isinstance(payload, dict):
            return [payload]
        if not isinstance(payload, list):
            return _error(400, "send one JSON object or a JSON array of objects")
        if len(payload) > MAX_BATCH:
            return _error(413, f"batch of {len(payload)} items: at most {MAX_BATCH} per request")
        return payload

    def endpoint(write: Callable[..., list[dict[str, Any]]]):
        async def handle(request: Request) -> Response:
            refused = await guard(request)
            if refused is not None:
                return refused
            items = await items_of(request)
            if isinstance(items, Response):
                return items
            results = await run_in_threadpool(write, store, items, now=now())
            return JSONResponse(_summary(results), headers={"cache-control": "no-store"})

        return handle

    return [
        Route("/v1/events", endpoint(store_events), methods=["POST"]),
        Route("/v1/users", endpoint(store_users), methods=["POST"]),
    ]
