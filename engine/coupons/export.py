"""`nudge coupons export`: every issued code as CSV for the shop's checkout to import.

Void codes are exported too, with `voided_at` and `void_reason`, so that a checkout
which imported a code before it was voided learns to refuse it.
"""

from __future__ import annotations

import csv
from typing import TextIO

import sqlalchemy as sa

from engine.store import Store
from engine.store.delivery import Coupon

coupons = Coupon.__table__
COLUMNS = (
    "code",
    "user_id",
    "rule_id",
    "value",
    "percent_off",
    "currency",
    "min_order",
    "issued_at",
    "expires_at",
    "redeemed_at",
    "redeemed_order_id",
    "voided_at",
    "void_reason",
)


def export_coupons(store: Store, out: TextIO) -> int:
    """Write the CSV (header + one row per code, oldest first); returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    query = sa.select(*(coupons.c[name] for name in COLUMNS)).order_by(coupons.c.id)
    with store.read() as connection:
        for row in connection.execution_options(stream_results=True).execute(query):
            writer.writerow(
                [
                    v.isoformat() if hasattr(v, "isoformat") else ("" if v is None else v)
                    for v in row
                ]
            )
            count += 1
    return count
