"""`nudge audiences sync` and `export`: membership -> files in each platform's format.

Export writes the full consenting membership. Sync writes only what changed since the
last sync of that platform: adds (new members) and removes (members who left, with the
identifiers as they were uploaded, kept in audience_synced_members). Both page by
user_id (keyset pagination), so no audience is held in memory whole.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from engine.audiences.formats import PLATFORMS, AudienceWriter, has_identifier, identifiers_for
from engine.audiences.members import (
    audience_exists,
    consenting_members,
    known_audiences,
    remove_withdrawn,
)
from engine.errors import NotFoundError, NudgeError
from engine.store import Store
from engine.store.delivery import AudienceSync, AudienceSyncedMember
from engine.store.sql import dialect_insert

synced = AudienceSyncedMember.__table__
syncs = AudienceSync.__table__
PAGE = 2_000


@dataclass
class PlatformResult:
    platform: str
    added: int = 0
    removed: int = 0
    skipped_no_identifier: int = 0
    # Phone numbers not exported, by why (engine/phones.py InvalidPhone.reason): the
    # user is still exported by email when they have one.
    phones_left_out: Counter[str] = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def _check(store: Store, audience: str, platforms: tuple[str, ...]) -> None:
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise NudgeError(f"unknown platform {unknown[0]!r}; use one of {', '.join(PLATFORMS)}")
    with store.read() as connection:
        if audience_exists(connection, audience):
            return
        names = known_audiences(connection)
    close = difflib.get_close_matches(audience, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise NotFoundError(f"no audience {audience!r} has members yet{hint}")


def _identified(
    platform: str, rows: Iterable[Mapping], shop_country: str, result: PlatformResult
) -> list[tuple[str, dict[str, str]]]:
    """(user_id, identifiers) of the users of `rows` worth writing; counts the others
    and the phone numbers left out in `result`."""
    kept = []
    for row in rows:
        values, phone_left_out = identifiers_for(platform, row, shop_country)
        if phone_left_out:
            result.phones_left_out[phone_left_out] += 1
        if platform == "csv" or has_identifier(values):
            kept.append((row["id"], values))
        else:
            result.skipped_no_identifier += 1
    return kept


def _count(store: Store, query: sa.Select) -> int:
    with store.read() as connection:
        return connection.execute(
            sa.select(sa.func.count()).select_from(query.subquery())
        ).scalar_one()


def _pages(store: Store, query: sa.Select, key: sa.ColumnElement):
    """Rows of `query` in pages ordered by `key` (keyset pagination, one query a page)."""
    last = None
    while True:
        page_query = query.order_by(key).limit(PAGE)
        if last is not None:
            page_query = page_query.where(key > last)
        with store.read() as connection:
            rows = [dict(r._mapping) for r in connection.execute(page_query)]
        if not rows:
            return
        yield rows
        last = rows[-1][key.name]


def export_audience(
    store: Store, audience: str, platform: str, out_dir: Path, *, now: datetime
) -> PlatformResult:
    """The full consenting membership of `audience` in `platform`'s format."""
    _check(store, audience, (platform,))
    with store.begin() as connection:
        remove_withdrawn(connection, now=now, audience=audience)
    query = consenting_members(audience)
    total = _count(store, query)
    writer = AudienceWriter(
        platform,
        out_dir / f"{audience}.{platform}",
        estimated_total=total,
        session_seed=f"{audience}:{platform}:export:{now.isoformat()}",
    )
    result = PlatformResult(platform)
    users_id = query.selected_columns.id
    for rows in _pages(store, query, users_id):
        writer.write(_identified(platform, rows, store.settings.shop.country, result))
    result.added = writer.count
    result.files = writer.close()
    return result


def sync_audience(
    store: Store,
    audience: str,
    *,
    platforms: tuple[str, ...],
    out_dir: Path,
    now: datetime,
) -> list[PlatformResult]:
    """Adds and removes since the last sync, per platform, as files; records the sync."""
    _check(store, audience, platforms)
    with store.begin() as connection:
        remove_withdrawn(connection, now=now, audience=audience)
    return [_sync_platform(store, audience, p, out_dir, now) for p in platforms]


def _sync_platform(
    store: Store, audience: str, platform: str, out_dir: Path, now: datetime
) -> PlatformResult:
    result = PlatformResult(platform)
    base = out_dir / f"{audience}.{platform}.{_stamp(now)}"
    current = consenting_members(audience)
    already = sa.select(synced.c.user_id).where(
        synced.c.audience == audience, synced.c.platform == platform
    )
    adds_query = current.where(current.selected_columns.id.not_in(already))
    adds = AudienceWriter(
        platform,
        base.with_name(base.name + ".add"),
        estimated_total=_count(store, adds_query),
        session_seed=f"{base.name}:add",
    )
    for rows in _pages(store, adds_query, adds_query.selected_columns.id):
        kept = _identified(platform, rows, store.settings.shop.country, result)
        adds.write(kept)
        with store.begin() as connection:
            if kept:
                connection.execute(
                    dialect_insert(connection, synced).on_conflict_do_nothing(),
                    [
                        {
                            "audience": audience,
                            "platform": platform,
                            "user_id": u,
                            "identifiers": v,
                            "synced_at": now,
                        }
                        for u, v in kept
                    ],
                )
    result.added = adds.count
    current_ids = current.with_only_columns(current.selected_columns.id)
    gone_query = sa.select(synced).where(
        synced.c.audience == audience,
        synced.c.platform == platform,
        synced.c.user_id.not_in(current_ids),
    )
    removes = AudienceWriter(
        platform,
        base.with_name(base.name + ".remove"),
        estimated_total=_count(store, gone_query),
        session_seed=f"{base.name}:remove",
    )
    while True:  # each page is deleted once written, so the next query starts afresh
        with store.connect() as connection:
            rows = connection.execute(gone_query.order_by(synced.c.user_id).limit(PAGE)).all()
        if not rows:
            break
        removes.write((r.user_id, r.identifiers) for r in rows)
        with store.begin() as connection:
            connection.execute(
                sa.delete(synced).where(
                    synced.c.audience == audience,
                    synced.c.platform == platform,
                    synced.c.user_id.in_([r.user_id for r in rows]),
                )
            )
    result.removed = removes.count
    result.files = [*adds.close(), *removes.close()]
    with store.begin() as connection:
        connection.execute(
            sa.insert(syncs),
            {
                "audience": audience,
                "platform": platform,
                "added": result.added,
                "removed": result.removed,
                "files": [str(f) for f in result.files],
                "synced_at": now,
            },
        )
    return result
