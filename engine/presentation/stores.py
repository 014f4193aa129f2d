"""The stores a command opened, closed when the command ends however it ends.

PostgreSQL connections must not outlive the command (tests run hundreds of commands
in one process); the CLI's group closes whatever `open_project_store` opened. The
database URL is remembered for error messages, which name it without its password.
"""

from __future__ import annotations

_opened: list = []
_database_url: str | None = None


def open_project_store(settings=None, *, check_schema: bool = True):
    """The project's store (the current folder's unless `settings` are given)."""
    from engine.config import load_settings
    from engine.store import open_store

    settings = settings or load_settings()
    remember_database_url(settings.database_url)
    store = open_store(settings, check_schema=check_schema)
    _opened.append(store)
    return store


def remember_database_url(url: str) -> None:
    global _database_url
    _database_url = url


def close_opened_stores() -> None:
    global _database_url
    while _opened:
        _opened.pop().dispose()
    _database_url = None


def configured_database_url() -> str | None:
    """The URL of the database this command used, if known (for error messages)."""
    if _database_url is not None:
        return _database_url
    try:
        from engine.config import load_settings

        return load_settings().database_url
    except Exception:  # noqa: BLE001 - no project here: no URL to name
        return None
