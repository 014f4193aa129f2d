"""One daemon per SQLite database file; as many as you like on PostgreSQL.

SQLite has a single write lock per file: two `nudge run` on one file would take turns
at it on every tick and dispatch pass, each waiting on the other. So the daemon holds
`exclusive_daemon(store)` while it runs: on SQLite an exclusive, non-blocking
`flock` on `<database>.daemon.lock` next to the database, with the holder's pid, host,
start time and owner written into it; a second daemon fails at once with
`DaemonAlreadyRunning` naming all that. The kernel releases a flock when its process
exits however it exits (kill -9 included), so a crashed daemon never leaves a stale
lock behind, and the file itself is left in place (deleting a lock file races with
the next holder). On PostgreSQL it does nothing: several daemons are supported there
(dispatchers claim with FOR UPDATE SKIP LOCKED, rule runs with claim rows).

    with exclusive_daemon(store, owner="nudge run"):
        ...  # tick and dispatch
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine import clock
from engine.errors import DaemonAlreadyRunning, NudgeError
from engine.store.database import Store

LOCK_SUFFIX = ".daemon.lock"


def daemon_lock_path(store: Store) -> Path | None:
    """`<database file>.daemon.lock`, or None where no lock is needed (PostgreSQL, or
    an in-memory SQLite database, which no other process can open)."""
    if store.dialect != "sqlite":
        return None
    database = store.engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):  # a URI filename (uri=true): the path, no query
        database = database[len("file:") :].split("?", 1)[0]
    # resolve(): the same file reached through a symlink or a relative path is the
    # same lock.
    path = Path(database).resolve()
    return path.with_name(path.name + LOCK_SUFFIX)


@contextmanager
def exclusive_daemon(store: Store, *, owner: str = "nudge run") -> Iterator[Path | None]:
    """Hold the database's daemon lock for the duration; yields the lock file (None on
    PostgreSQL). Raises `DaemonAlreadyRunning` at once when another process holds it.

    `owner` is what the holder is called in the other daemon's error message.
    """
    path = daemon_lock_path(store)
    if path is None:
        yield None
        return
    try:
        # Not inherited by subprocesses (PEP 446), so no child keeps the lock alive.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise NudgeError(f"cannot open the daemon lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise DaemonAlreadyRunning(
                _refusal(path, holder), lock_path=path, holder=holder
            ) from None
        except OSError as exc:  # e.g. ENOLCK: a file system without locks
            raise NudgeError(f"cannot lock the daemon lock file {path}: {exc.strerror}") from None
        _write_holder(fd, owner)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # nobody's details once it is released
    finally:
        os.close(fd)  # releases the flock


def _write_holder(fd: int, owner: str) -> None:
    details = {
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "started": clock.utcnow().isoformat(timespec="seconds"),
        "owner": owner,
    }
    data = (json.dumps(details) + "\n").encode("utf-8")
    # One write over the old contents, then cut what is left of them: a reader never
    # sees an empty file while we hold the lock.
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _read_holder(fd: int) -> dict[str, str]:
    try:
        loaded = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(key): str(value) for key, value in loaded.items()}


def _refusal(path: Path, holder: dict[str, str]) -> str:
    database = path.with_name(path.name[: -len(LOCK_SUFFIX)])
    if holder.get("pid"):
        who = (
            f"{holder.get('owner', 'a daemon')}, pid {holder['pid']} on host "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')}"
        )
    else:
        who = "its details are not readable yet"
    return (
        f"another Nudge daemon is already running on the SQLite database {database} "
        f"({who}; lock file {path}). SQLite allows one daemon per database file: stop "
        "that one first (a daemon that exits or is killed frees the lock by itself), "
        "or move the store to PostgreSQL (`[database] url` or NUDGE_DATABASE_URL = "
        "postgresql+psycopg://...) to run several daemons."
    )
