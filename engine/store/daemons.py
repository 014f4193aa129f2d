"""The daemons table: each `nudge run` registers, beats, and signs off.

`nudge status` lists the live ones (a heartbeat within STALE_AFTER ticks); a daemon
killed with -9 simply stops beating and is shown as gone.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.store.planning import DaemonProcess

daemons = DaemonProcess.__table__


def register(connection: Connection, now: datetime, *, tick_seconds: float) -> str:
    daemon_id = str(uuid.uuid4())
    connection.execute(
        daemons.insert().values(
            id=daemon_id,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            tick_seconds=tick_seconds,
        )
    )
    return daemon_id


def heartbeat(connection: Connection, daemon_id: str, now: datetime) -> None:
    connection.execute(daemons.update().where(daemons.c.id == daemon_id).values(heartbeat_at=now))


def sign_off(connection: Connection, daemon_id: str, now: datetime) -> None:
    connection.execute(
        daemons.update().where(daemons.c.id == daemon_id).values(heartbeat_at=now, stopped_at=now)
    )


def recent(connection: Connection, *, since: datetime) -> list[dict]:
    """Daemons that ran since `since`, newest first."""
    rows = connection.execute(
        sa.select(daemons)
        .where(sa.or_(daemons.c.stopped_at.is_(None), daemons.c.stopped_at >= since))
        .where(daemons.c.heartbeat_at >= since)
        .order_by(daemons.c.started_at.desc())
    ).mappings()
    return [dict(row) for row in rows]


def prune(connection: Connection, *, before: datetime) -> int:
    """Forget daemons that stopped (or went silent) before `before`."""
    return connection.execute(daemons.delete().where(daemons.c.heartbeat_at < before)).rowcount
