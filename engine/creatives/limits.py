"""Ad text limits per platform field, from docs/specs/ad_text_limits.md.

Widths are counted by engine.creatives.width.text_width on the rendered text.
Meta only recommends its lengths, so they are warnings; the others are errors
because the platform rejects the ad.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldLimit:
    platform: str
    field: str
    max_width: int
    min_count: int
    max_count: int
    severity: str = "error"
    # Characters the platform refuses in this field (checked besides the width).
    forbid_emoji: bool = False
    forbid_chars: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}.{self.field}"


LIMITS: dict[str, FieldLimit] = {
    limit.key: limit
    for limit in (
        FieldLimit("google.search", "headline", 30, 3, 15),
        FieldLimit("google.search", "description", 90, 2, 4),
        FieldLimit("google.search", "path1", 15, 0, 1),
        FieldLimit("google.search", "path2", 15, 0, 1),
        FieldLimit("google.display", "headline", 30, 1, 5),
        FieldLimit("google.display", "long_headline", 90, 1, 1),
        FieldLimit("google.display", "description", 90, 1, 5),
        FieldLimit("google.display", "business_name", 25, 1, 1),
        FieldLimit("meta", "primary_text", 125, 0, 5, severity="warning"),
        FieldLimit("meta", "headline", 40, 0, 5, severity="warning"),
        FieldLimit("meta", "description", 30, 0, 5, severity="warning"),
        FieldLimit("tiktok", "ad_text", 100, 1, 1, forbid_emoji=True, forbid_chars="{}#"),
    )
}

PLATFORMS: tuple[str, ...] = tuple(dict.fromkeys(limit.platform for limit in LIMITS.values()))

# Ad platform -> (utm_source, utm_medium) of the links its ads carry.
AD_TRAFFIC: dict[str, tuple[str, str]] = {
    "google.search": ("google", "cpc"),
    "google.display": ("google", "display"),
    "meta": ("meta", "paid-social"),
    "tiktok": ("tiktok", "paid-social"),
}


def fields_of(platform: str) -> list[str]:
    return [limit.field for limit in LIMITS.values() if limit.platform == platform]
