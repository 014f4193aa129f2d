"""The assignment hash as SQL functions: MD5 buckets the same on SQLite and PostgreSQL.

Holdout and variant assignment (engine/planning/assignment.py) computes a user's bucket
inside the database. PostgreSQL has `md5()`; SQLite gets these functions registered on
every connection (engine/store/database.py), so both compute the same buckets.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # basis points: a 10% holdout is buckets 0..999


def sqlite_md5_bucket(text: str) -> int:
    """Registered on SQLite connections as nudge_bucket(text)."""
    digest = hashlib.md5(text.encode(), usedforsecurity=False)
    return int(digest.hexdigest()[:8], 16) % BUCKETS


def sqlite_md5_hex(text: str | None) -> str | None:
    """Registered on SQLite connections as md5(text): PostgreSQL's md5(), hex digest."""
    if text is None:
        return None
    return hashlib.md5(str(text).encode(), usedforsecurity=False).hexdigest()
