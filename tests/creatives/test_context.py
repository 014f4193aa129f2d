"""Rendering context: locale fallback, money and dates per locale, UTM links, tokens."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from creative_helpers import NOW, context, project

from engine.creatives import available_surfaces, render_creative, sign_token, verify_token
from engine.creatives.loader import choose_locale

EXPIRY = NOW + timedelta(days=90)  # `[serve] link_days` defaults to 90


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return project(tmp_path_factory.mktemp("ctx") / "shop")


@pytest.mark.parametrize(
    ("requested", "chosen"),
    [
        ("zh-CN", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("zh_Hant_TW", "zh-CN"),
        ("en-GB", "en"),
        ("EN", "en"),
        ("fr-FR", "zh-CN"),  # the shop default
        (None, "zh-CN"),
    ],
)
def test_locale_fallback_chain(requested, chosen):
    assert choose_locale(requested, ["en", "zh-CN"], "zh-CN") == chosen


def test_money_and_dates_in_the_users_locale_and_time_zone(settings):
    zh = render_creative(settings, "winback", "sms", context(settings, locale="zh-CN"))
    assert "满¥100减¥20，2026年11月15日前有效" in zh.text
    # 14 days after 2026-11-01T02:00Z is 2026-11-15 in London too; Los Angeles is a day behind.
    en = render_creative(
        settings, "winback", "sms", context(settings, timezone="America/Los_Angeles")
    )
    assert "CN¥20 off orders over CN¥100. Valid until November 14, 2026." in en.text


def test_links_carry_utm_parameters_per_surface_and_a_signed_token(settings):
    ctx = context(settings)
    sms = render_creative(settings, "winback", "sms", ctx)
    ad = render_creative(settings, "winback", "ad:google.search.headline_1", ctx)
    landing = render_creative(settings, "winback", "landing", ctx)
    query = parse_qs(urlsplit(sms.url).query)
    assert urlsplit(sms.url).path == "/lp/winback/en/standard.html"
    assert query == {
        "utm_source": ["sms"],
        "utm_medium": ["sms"],
        "utm_campaign": ["winback-lapsed-members"],
        "utm_content": ["standard"],
        "t": [sign_token(b"test-secret", "u1", "winback-lapsed-members", expires_at=EXPIRY)],
    }
    assert parse_qs(urlsplit(ad.url).query)["utm_source"] == ["google"]
    assert parse_qs(urlsplit(ad.url).query)["utm_medium"] == ["cpc"]
    assert f'href="{landing.url.replace("&", "&amp;")}"' in landing.text
    token = query["t"][0]
    assert verify_token(b"test-secret", token, "winback-lapsed-members", now=NOW) == "u1"
    assert verify_token(b"test-secret", token, "other-rule", now=NOW) is None
    assert verify_token(b"other-secret", token, "winback-lapsed-members", now=NOW) is None


def test_the_personal_token_expires_after_the_configured_link_days(settings):
    token = parse_qs(
        urlsplit(render_creative(settings, "winback", "sms", context(settings)).url).query
    )["t"][0]
    rule = "winback-lapsed-members"
    last_second = EXPIRY - timedelta(seconds=1)
    assert verify_token(b"test-secret", token, rule, now=last_second) == "u1"
    assert verify_token(b"test-secret", token, rule, now=EXPIRY) is None
    # The expiry is signed: moving it later breaks the signature.
    encoded, expiry, signature = token.split(".")
    later = f"{encoded}.{int(expiry, 16) + 86400:x}.{signature}"
    assert verify_token(b"test-secret", later, rule, now=NOW) is None


def test_ads_never_see_raw_contact_points(settings):
    ctx = context(settings, email="alex@example.com", phone="13800000000")
    assert "email" not in ctx["user"] and "phone" not in ctx["user"]
    assert "alex@example.com" not in str(ctx)


def test_available_surfaces_are_stable(settings):
    assert available_surfaces(settings, "winback", "en") == [
        "email_subject",
        "email_html",
        "email_text",
        "sms",
        "landing",
        "ad:google.search.headline_1",
        "ad:google.search.headline_2",
        "ad:google.search.headline_3",
        "ad:google.search.description_1",
        "ad:google.search.description_2",
        "ad:meta.primary_text",
        "ad:meta.headline",
        "ad:tiktok.ad_text",
    ]
    assert available_surfaces(settings, "vip") == ["landing"] + [
        s for s in available_surfaces(settings, "vip") if s.startswith("ad:")
    ]
