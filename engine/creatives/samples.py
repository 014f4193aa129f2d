"""Sample users, offer and instant for checks, previews and the static landing site.

Two users per locale: one with every field, one anonymous (no name, no tier), so that
`nudge check` exercises both branches of `{% if user.first_name %}` and a template that
prints a missing field fails before any real user is messaged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# A fixed instant keeps check output and previews stable from run to run.
SAMPLE_NOW = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
SAMPLE_BASE_URL = "https://shop.example.com/lp"
SAMPLE_SECRET = b"nudge-sample-secret"
SAMPLE_CODE = "NUDGE2026"
SAMPLE_OFFER: dict[str, Any] = {
    "value": 20,
    "min_order": 100,
    "expires_in": "14d",
    "code": SAMPLE_CODE,
}

_NAMED = {
    "zh": {"name": "王小明", "country": "CN", "timezone": "Asia/Shanghai"},
    "en": {"name": "Alex Morgan", "country": "GB", "timezone": "Europe/London"},
}


def sample_users(locale: str) -> list[dict[str, Any]]:
    named = _NAMED.get(locale.split("-")[0].lower(), {"name": "Sam Lee", "country": None})
    profile = {
        "purchase_count": 3,
        "total_spent": 860,
        "avg_order_value": 286.67,
        "first_purchase_at": datetime(2025, 3, 8, 4, 0, tzinfo=UTC),
        "last_purchase_at": datetime(2026, 6, 18, 12, 0, tzinfo=UTC),
    }
    return [
        {"id": f"sample-{locale}", "locale": locale, "member_tier": "gold", "profile": profile}
        | named,
        {"id": f"sample-{locale}-anonymous", "locale": locale, "timezone": named.get("timezone")},
    ]


def sample_offer(offer: dict[str, Any] | None, currency: str) -> dict[str, Any]:
    """The rule's offer, or the built-in one; a sample code where the coupon would issue one.

    Real codes are issued per user by the coupon action at send time, so a check
    renders with a stand-in to exercise the `{% if offer.code %}` branches.
    """
    result = dict(SAMPLE_OFFER) if offer is None else dict(offer)
    result.setdefault("currency", currency)
    if (result.get("value") or result.get("percent_off")) and not result.get("code"):
        result["code"] = SAMPLE_CODE
    return result
