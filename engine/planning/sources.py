"""What conditions are compiled against at T: users, profiles as of T, the stage, the
triggering event (engine.conditions compiles against these)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.config import LifecycleSettings, Settings
from engine.store.people import Event, Profile, User
from engine.store.profiles import profiles_as_of

users = User.__table__
events = Event.__table__
profiles_table = Profile.__table__
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

    found = profiles_as_of(connection, at)
    if found is profiles_table:
        # The maintained profiles describe T (the usual case): every rule of a tick
        # shares one alias and one stage CASE, built once per T (1-2 ms each build).
        profiles, stage = _PROFILES, _stage_from_maintained_profiles(at, settings.lifecycle)
    else:
        profiles = found.alias("p")
        stage = stage_case(users, profiles, as_of=at, settings=settings.lifecycle)
    event = _TRIGGERING_EVENT if event_trigger else None
    return Sources(at=at, users=users, profiles=profiles, stage=stage, event=event)


_PROFILES = profiles_table.alias("p")


@lru_cache(maxsize=8)
def _stage_from_maintained_profiles(at: datetime, lifecycle: LifecycleSettings) -> sa.ColumnElement:
    """The stage CASE over `_PROFILES` at `at` (settings are frozen, so hashable: an
    edited lifecycle section is a new key). SQL expressions are immutable: statements
    may share one."""
    from engine.lifecycle import stage_case

    return stage_case(users, _PROFILES, as_of=at, settings=lifecycle)
