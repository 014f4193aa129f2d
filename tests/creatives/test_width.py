"""Width counting per docs/specs/ad_text_limits.md: W/F characters count 2."""

from __future__ import annotations

import pytest

from engine.creatives.width import has_emoji, sms_segments, text_width


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("", 0),
        ("Shop now", 8),
        ("双11", 4),  # 双 is W (2), ASCII digits 1 each
        ("满¥100减¥20", 11),  # ¥ (U+00A5) is Na: 1
        ("老朋友回归礼¥20", 15),
        ("VIP专享，新品优先购", 19),  # the fullwidth comma is F: 2
        ("ＡＢＣ", 6),  # fullwidth Latin letters are F
        ("ｶﾀｶﾅ", 4),  # halfwidth katakana are H: 1
        ("한국어", 6),
        ("我" * 15, 30),  # a 30-wide Google headline holds 15 CJK characters
    ],
)
def test_text_width_counts_cjk_as_two(text, width):
    assert text_width(text) == width


def test_fifteen_chinese_characters_fill_a_google_headline_and_sixteen_overflow():
    assert text_width("我" * 15) <= 30 < text_width("我" * 16)


def test_emoji_detection():
    assert has_emoji("Sale 🎉")
    assert not has_emoji("双11狂欢 ¥50")


def test_sms_segments():
    assert sms_segments("a" * 160) == (1, "GSM-7")
    assert sms_segments("a" * 161) == (2, "GSM-7")
    assert sms_segments("好" * 70) == (1, "UCS-2")
    assert sms_segments("好" * 71) == (2, "UCS-2")
