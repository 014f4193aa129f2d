"""Deterministic holdout and variant assignment (DESIGN invariant 4).

A user's bucket depends only on (user, rule, salt, purpose), so a user keeps the same
variant forever and a holdout group stays the same across runs, daemons and
databases. The hash is MD5 (not for security: for a uniform, portable spread) and is
computed inside the database so assignment stays set-based: PostgreSQL has `md5()`,
SQLite gets the same function registered on every connection (engine/store/database.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import sqlalchemy as sa

from engine.store.buckets import BUCKETS


def bucket(user_id: str, rule_id: str, salt: str, purpose: str) -> int:
    """The bucket in [0, BUCKETS) of one user, computed in Python (tests, explain)."""
    digest = hashlib.md5(_key(user_id, rule_id, salt, purpose).encode(), usedforsecurity=False)
    return int(digest.hexdigest()[:8], 16) % BUCKETS


def _key(user_id: str, rule_id: str, salt: str, purpose: str) -> str:
    return f"{salt}:{rule_id}:{purpose}:{user_id}"


def bucket_sql(
    user_id: sa.ColumnElement, rule_id: str, salt: str, purpose: str, dialect: str
) -> sa.ColumnElement[int]:
    """The same bucket as `bucket()`, as a SQL expression over a user id column."""
    prefix = f"{salt}:{rule_id}:{purpose}:"
    text = sa.literal(prefix, sa.String) + user_id
    if dialect == "postgresql":
        # First 32 bits of the hex digest as an unsigned integer, as in Python.
        first32 = sa.cast(
            sa.cast(sa.literal("x", sa.String) + sa.func.substr(sa.func.md5(text), 1, 8), _Bit32()),
            sa.BigInteger,
        )
        return first32 % BUCKETS
    return sa.func.nudge_bucket(text, type_=sa.Integer)


class _Bit32(sa.types.UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **_kw) -> str:
        return "bit(32)"


def holdout_basis_points(holdout: float) -> int:
    return round(holdout * BUCKETS)


def variant_ranges(weights: Mapping[str, float]) -> list[tuple[str, int, int]]:
    """[(variant, low, high)) bucket ranges proportional to the weights, in file order."""
    total = sum(weights.values())
    ranges: list[tuple[str, int, int]] = []
    low = 0
    names = list(weights)
    for index, name in enumerate(names):
        high = BUCKETS if index == len(names) - 1 else low + round(BUCKETS * weights[name] / total)
        ranges.append((name, low, high))
        low = high
    return ranges


def variant_for_bucket(value: int, weights: Mapping[str, float]) -> str | None:
    for name, low, high in variant_ranges(weights):
        if low <= value < high:
            return name
    return None


def variant_sql(
    bucket_column: sa.ColumnElement[int], weights: Mapping[str, float]
) -> sa.ColumnElement[str | None]:
    if not weights:
        return sa.null()
    whens = [
        (bucket_column < high, sa.literal(name)) for name, _low, high in variant_ranges(weights)
    ]
    return sa.case(*whens, else_=sa.null())
