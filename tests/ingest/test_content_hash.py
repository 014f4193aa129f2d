"""An event's content hash (its source id when the file gives none) never changes.

A different hash for the same event would store it twice when a file is imported
again after an upgrade; these were computed by the first implementation.
"""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from engine.ingest.money import ShopCurrency
from engine.ingest.records import event_row

SHOP = ShopCurrency("CNY", {"USD": Decimal("7.1")})
ZONE = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("record", "source_id"),
    [
        (
            {"user": "u1", "type": "visit", "at": "2026-03-01T10:00:00", "page": "/"},
            "GmaH5Ovr6rrYnJOWHPtIzw",
        ),
        (
            {
                "user": "u1",
                "type": "purchase",
                "at": "2026-03-02T10:00:00.5+08:00",
                "amount": 99.5,
                "order_id": "o1",
                "utm_source": "wechat",
            },
            "R_KJukstiNnQeaZdFfQWCw",
        ),
        (
            {
                "user_id": "u2",
                "type": "purchase",
                "occurred_at": "2026-03-03T00:00:00Z",
                "amount": "12.30",
                "currency": "USD",
                "coupon_code": "SAVE10",
            },
            "pBxYY__3c5l1hdPWjxyQ-g",
        ),
        (
            {
                "user": "李雷",
                "type": "signup",
                "at": "2026-03-04T00:00:00Z",
                "properties": {"b": [1, 2.5, None, True], "a": {"z": "😀", "y": "tab\there"}},
                "extra": 7,
            },
            "z7QsO5A9qUrZZMOX2ycw4Q",
        ),
    ],
)
def test_the_content_hash_of_an_event_is_stable(record, source_id):
    assert event_row(record, ZONE, SHOP)["source_id"] == source_id
