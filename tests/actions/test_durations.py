"""Duration strings shared by rules, caps and coupons."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14d", timedelta(days=14)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        (" 1D12h ", timedelta(days=1, hours=12)),
    ],
)
def test_parse(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "14", "d", "1.5d", "12h1d", "2 weeks", "-3d", "0d"])
def test_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
