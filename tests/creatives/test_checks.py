"""`nudge check` for creatives: consistency ad <-> landing, limits, UTM, structure."""

from __future__ import annotations

import pytest
from creative_helpers import OFFER, project, write

from engine.creatives import CreativeUse, check_creatives
from engine.errors import Location

WINBACK_USES = [
    CreativeUse(
        "winback-lapsed-members",
        "winback",
        "standard",
        {"value": 20, "currency": "CNY", "min_order": 100, "expires_in": "14d"},
        Location("rules/winback-lapsed-members.yaml", 23, 10),
    ),
    CreativeUse(
        "winback-lapsed-members",
        "winback",
        "bigger-coupon",
        {"value": 30, "currency": "CNY", "min_order": 100, "expires_in": "14d"},
        Location("rules/winback-lapsed-members.yaml", 23, 10),
    ),
]


@pytest.fixture
def shipped(tmp_path):
    return project(tmp_path / "shop")


def rendered(diagnostics):
    return [d.render() for d in diagnostics]


def test_shipped_creatives_are_clean(shipped):
    uses = WINBACK_USES + [
        CreativeUse("double-eleven", "double-eleven", None, {"percent_off": 15, "code": "D11"}),
        CreativeUse("welcome-gift-pack", "welcome", None, {"value": 10, "min_order": 50}),
    ]
    assert rendered(check_creatives(shipped, uses)) == []


def test_coupon_value_changed_only_in_the_ad_is_caught(shipped):
    ads = shipped.templates_dir / "winback" / "ads.en.yaml"
    text = ads.read_text(encoding="utf-8")
    ads.write_text(
        text.replace("We Miss You: {{ blocks.discount() }} Off", "We Miss You: CN¥25 Off")
    )
    assert rendered(check_creatives(shipped, WINBACK_USES)) == [
        "templates/winback/ads.en.yaml:5: error: ad:google.search.headline_1 shows the amount "
        "'CN¥25' but the landing page templates/winback/landing.en.html does not "
        "(rule winback-lapsed-members, variant standard, locale en)",
        "templates/winback/ads.en.yaml:5: error: ad:google.search.headline_1 shows the amount "
        "'CN¥25' but the landing page templates/winback/landing.en.html does not "
        "(rule winback-lapsed-members, variant bigger-coupon, locale en)",
    ]


def test_code_missing_from_the_landing_page_is_caught(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(
        settings,
        "promo/ads.en.yaml",
        "google.search:\n"
        "  headline:\n"
        "    - 'Save {{ offer.value|money }}'\n"
        "    - 'Use code {{ offer.code }}'\n"
        "    - 'New arrivals'\n"
        "  description: ['Save {{ offer.value|money }} today.', 'Free returns.']\n",
    )
    write(settings, "promo/landing.en.html", "<h1>Save {{ offer.value|money }}</h1>")
    use = CreativeUse("promo-rule", "promo", None, dict(OFFER), Location("rules/promo.yaml", 9))
    assert rendered(check_creatives(settings, [use])) == [
        "templates/promo/ads.en.yaml:4: error: ad:google.search.headline_2 shows the code "
        "'WB20' but the landing page templates/promo/landing.en.html does not "
        "(rule promo-rule, locale en)"
    ]


def test_ad_over_the_width_limit_and_too_few_headlines(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(
        settings,
        "promo/ads.zh-CN.yaml",
        "google.search:\n"
        "  headline:\n"
        "    - '老朋友专属回归礼包限时领取{{ offer.value|money }}！'\n"
        "    - '上新了'\n"
        "  description: ['立减{{ offer.value|money }}。', '退换无忧。']\n"
        "tiktok:\n"
        "  ad_text: '#双11 {{ offer.value|money }} 🎉'\n",
    )
    write(settings, "promo/landing.zh-CN.html", "<h1>{{ offer.value|money }}</h1>")
    assert rendered(check_creatives(settings, [])) == [
        "templates/promo/ads.zh-CN.yaml:3: error: google.search.headline: 2 given, "
        "the platform takes 3–15",
        "templates/promo/ads.zh-CN.yaml:3: error: ad:google.search.headline_1 is 31 wide, over "
        "the limit of 30 (CJK characters count 2; locale zh-CN): '老朋友专属回归礼包限时领取¥20！'",
        "templates/promo/ads.zh-CN.yaml:7: error: ad:tiktok.ad_text: tiktok refuses emoji",
        "templates/promo/ads.zh-CN.yaml:7: error: ad:tiktok.ad_text: tiktok refuses the "
        "characters #",
        "templates/promo/ads.zh-CN.yaml:7: error: ad:tiktok.ad_text shows the number '11' but "
        "the landing page templates/promo/landing.zh-CN.html does not (rule sample, "
        "locale zh-CN)",
    ]


def test_links_without_utm_parameters_are_caught(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(settings, "promo/sms.en.txt", "Sale! https://shop.example.com/lp/sale.html {{ url }}")
    write(settings, "promo/landing.en.html", '<a href="{{ url }}">Shop</a>')
    assert rendered(check_creatives(settings, [])) == [
        "templates/promo/sms.en.txt: error: sms: link https://shop.example.com/lp/sale.html "
        "lacks utm_source, utm_medium, utm_campaign (use {{ url }}, {{ landing_url }} or "
        "{{ shop_url }})"
    ]


def test_a_surface_missing_in_one_locale_is_reported(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(settings, "promo/sms.en.txt", "{{ offer.code }} {{ url }}")
    write(settings, "promo/sms.zh-CN.txt", "{{ offer.code }} {{ url }}")
    write(settings, "promo/landing.en.html", "<p>{{ offer.code }}</p>")
    assert rendered(check_creatives(settings, [])) == [
        "templates/promo/landing.en.html: error: surface landing exists for locale en "
        "but not for zh-CN"
    ]


def test_unknown_creative_named_by_a_rule_is_located_at_the_rule(shipped):
    use = CreativeUse("r", "winbak", None, {}, Location("rules/r.yaml", 12, 10))
    assert rendered(check_creatives(shipped, [use])) == [
        "rules/r.yaml:12:10: error: rule r: no creative 'winbak' in "
        f"{shipped.templates_dir} (did you mean 'winback'?)"
    ]
