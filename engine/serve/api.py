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
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.ingest.money import ShopCurrency
from engine.ingest.records import event_row, user_row
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
        with store.connect() as connection:
            writer = BatchWriter(connection, now)
            writer.create_temp_tables()
            try:
                with connection.begin():
                    seen = _stored_keys(connection, [row for _, row in good])
                    for index, row in good:
                        key = (row["user_id"], row["source_id"])
                        if key in seen:
                            results[index] = _result(index, "duplicate", "already stored")
                            continue
                        seen.add(key)
                        fresh.append(row)
                        results[index] = _result(index, "stored")
                    if fresh:
                        result = writer.write_events(list(fresh), require_users=False)
                        if result.inserted or result.users_created:
                            # Wakes the daemons: new data may give rules something to do.
                            signal_change(connection)
            finally:
                if connection.in_transaction():
                    connection.rollback()
                with connection.begin():
                    writer.drop_temp_tables()
    if any(row["coupon_code"] for row in fresh):
        # As file ingest does: a purchase with a coupon code redeems it now.
        from engine.coupons.redeem import redeem_coupons

        redeem_coupons(store, now=now)
    return [result for result in results if result is not None]


def _stored_keys(connection: sa.Connection, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The (user_id, source_id) pairs of these rows that are already stored."""
    wanted = {(row["user_id"], row["source_id"]) for row in rows}
    query = sa.select(events.c.user_id, events.c.source_id).where(
        events.c.user_id.in_({user for user, _ in wanted}),
        events.c.source_id.in_({source for _, source in wanted}),
    )
    return {(r.user_id, r.source_id) for r in connection.execute(query)} & wanted


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
        with store.connect() as connection:
            writer = BatchWriter(connection, now)
            writer.create_temp_tables()
            try:
                with connection.begin():
                    writer.write_users(rows)
                    signal_change(connection)
            finally:
                if connection.in_transaction():
                    connection.rollback()
                with connection.begin():
                    writer.drop_temp_tables()
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
