"""What conditions are compiled against at T: users, profiles as of T, the stage, the
triggering event (engine.conditions compiles against these)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.config import Settings
from engine.store.people import Event, User
from engine.store.profiles import profiles_as_of

users = User.__table__
events = Event.__table__
# Built once, not per statement: a table's alias builds a proxy of every column the
# first time its columns are read, which the daemon's idle tick paid for each rule.
_TRIGGERING_EVENT = events.alias("ev")


@dataclass(frozen=True)
class Sources:
    """What conditions are compiled against at T (engine.conditions uses these)."""

    at: datetime
    users: sa.FromClause
    profiles: sa.FromClause
    stage: sa.ColumnElement
    event: sa.FromClause | None
    # When the occurrence's chain started (`since="trigger"`); None where conditions
    # are evaluated without an occurrence.
    trigger_at: sa.ColumnElement | None = None


# (expressions, sources) -> one boolean SQL expression; supplied by the caller so the
# pipeline does not depend on how conditions are parsed.
ConditionCompiler = Callable[[Sequence[object], Sources], sa.ColumnElement[bool]]


def build_sources(connection: Connection, settings: Settings, at: datetime, event_trigger: bool):
    from engine.lifecycle import stage_case

    profiles = profiles_as_of(connection, at).alias("p")
    stage = stage_case(users, profiles, as_of=at, settings=settings.lifecycle)
    event = _TRIGGERING_EVENT if event_trigger else None
    return Sources(at=at, users=users, profiles=profiles, stage=stage, event=event)
