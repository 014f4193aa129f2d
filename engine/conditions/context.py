"""What a compiled condition is evaluated against: the instant T and the tables.

The caller (planner, explain, rule tests) builds one `CompileContext` per
evaluation; `CompileContext.for_connection` builds the usual one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause

from engine.clock import ensure_aware
from engine.conditions.nodes import Node
from engine.config import Settings
from engine.store.people import User
from engine.store.profiles import profiles_as_of


@dataclass(frozen=True)
class CompileContext:
    """The evaluation instant and the selectables a condition reads.

    - `now`: T, time-zone aware; every bound instant is computed from it in Python.
    - `users`: the users table or an alias of it.
    - `profiles`: user_id + PROFILE_COLUMNS as of T (`profiles_as_of`), which the
      caller LEFT OUTER JOINs on user_id (see `from_clause`).
    - `stage`: the user's stage at T (`engine.lifecycle.stage_case`), or None when
      the condition does not read `stage`.
    - `event`: the triggering event (an alias of `events` joined by the caller), or
      None for rules not triggered by an event.
    - `segments`: checked named segments, name -> expression.
    - `trigger_at`: per row, the instant the occurrence's chain started (a column of
      the caller's occurrences), for `since="trigger"` windows; None where
      conditions are evaluated without an occurrence.
    """

    now: datetime
    users: FromClause
    profiles: FromClause
    stage: ColumnElement | None = None
    event: FromClause | None = None
    segments: Mapping[str, Node] = field(default_factory=dict)
    trigger_at: ColumnElement | None = None

    def __post_init__(self) -> None:
        ensure_aware(self.now)

    def from_clause(self) -> FromClause:
        """users LEFT JOIN profiles (and JOIN the event, when there is one)."""
        joined = self.users.outerjoin(self.profiles, self.profiles.c.user_id == self.users.c.id)
        if self.event is not None:
            joined = joined.join(self.event, self.event.c.user_id == self.users.c.id)
        return joined

    @classmethod
    def for_connection(
        cls,
        connection: Connection,
        settings: Settings,
        now: datetime,
        *,
        event: FromClause | None = None,
        segments: Mapping[str, Node] | None = None,
    ) -> CompileContext:
        """The usual context: profiles and stage as of `now` (DESIGN invariant 5)."""
        from engine.lifecycle import stage_case

        users = User.__table__
        profiles = profiles_as_of(connection, now)
        stage = stage_case(users, profiles, as_of=now, settings=settings.lifecycle)
        return cls(
            now=now,
            users=users,
            profiles=profiles,
            stage=stage,
            event=event,
            segments=dict(segments or {}),
        )


def instant(value: datetime) -> ColumnElement:
    """A bound instant, typed so that SQLite gets the same UTC text it stores."""
    from engine.store.types import UTCDateTime

    return sa.literal(ensure_aware(value), UTCDateTime())
