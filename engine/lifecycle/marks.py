"""The refresh mark: up to which instant, and with which thresholds, stages were
last refreshed (lifecycle_marks). A refresh with the same thresholds recomputes only
the users whose stage can have changed since; different thresholds, or definitions
that changed meaning, recompute everyone once."""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.config import LifecycleSettings
from engine.lifecycle.tables import marks

MARK = "stages"
# Bumped whenever a definition changes meaning, so that the first refresh after an
# upgrade recomputes everyone instead of trusting stages the old definitions recorded.
# 1 (unversioned): the thresholds alone. 2: churned means inactive (any event),
# and members who never bought lapse by inactivity.
DEFINITIONS_VERSION = 2


def settings_hash(lifecycle: LifecycleSettings) -> str:
    fingerprint = f"{lifecycle.model_dump_json()} definitions={DEFINITIONS_VERSION}"
    return hashlib.sha256(fingerprint.encode()).hexdigest()


def read_mark(connection: Connection):
    """The mark row (as_of, settings_hash), or None before the first refresh."""
    return connection.execute(sa.select(marks).where(marks.c.name == MARK)).first()


def write_mark(connection: Connection, now: datetime, fingerprint: str) -> None:
    values = {"as_of": now, "settings_hash": fingerprint}
    updated = connection.execute(marks.update().where(marks.c.name == MARK).values(values))
    if updated.rowcount == 0:
        connection.execute(marks.insert().values(name=MARK, **values))
