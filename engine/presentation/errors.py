"""Expected failures as one line, and database URLs without their password.

A database that is down or misnamed and a disk that is full are facts of operations,
not bugs: the operator gets one line naming what failed (the URL with its password
hidden), never a traceback. Anything not recognised here stays a traceback: a bug.
"""

from __future__ import annotations

import errno
import re

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact_url(url: str) -> str:
    """`postgresql+psycopg://shop:***@db:5432/nudge`: what may be printed or logged."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparseable URL is redacted by pattern instead
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def redact_text(text: str, url: str | None) -> str:
    """`text` with the password of `url` (and any user:password@ in a URL) hidden."""
    text = _PASSWORD_IN_URL.sub(r"\1***@", text)
    password = _password_of(url) if url else None
    if password:
        text = text.replace(password, "***")
    return text


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from a file write, or the database saying its disk is full."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
        if type(error).__name__ == "DiskFull":  # psycopg.errors.DiskFull
            return True
    return False


def expected_failure(exc: BaseException, database_url: str | None) -> str | None:
    """One line for an expected failure, or None when `exc` is a bug."""
    import sqlalchemy.exc as sa_exc

    if is_disk_full(exc):
        where = getattr(exc, "filename", None)
        return (
            "the disk is full" + (f" (writing {where})" if where else "") + ": free space and retry"
        )
    shown = redact_url(database_url) if database_url else "the configured database"
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return f"cannot use the database URL {shown}: {_first_line(exc, database_url)}"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        reason = _first_line(getattr(exc, "orig", None) or exc, database_url)
        return f"cannot use the database at {shown}: {reason}"
    return None


def _first_line(exc: BaseException, url: str | None) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    # psycopg prefixes the driver's words; the URL already names host and port.
    return redact_text(text.removeprefix("connection failed: "), url)


def _password_of(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:  # noqa: BLE001
        match = _PASSWORD_IN_URL.search(url)
        return match.group(0).split(":", 2)[-1].rstrip("@") if match else None


def _chain(exc: BaseException):
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
