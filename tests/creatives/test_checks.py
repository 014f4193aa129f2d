"""`nudge check` for creatives: consistency ad <-> landing, limits, UTM, structure."""

from __future__ import annotations

import pytest
from creative_helpers import OFFER, context, project, write

from engine.creatives import (
    CreativeUse,
    RenderedSurface,
    Skipped,
    check_creatives,
    render_creative,
)
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
        "{{ shop_url }})",
        # Typed by hand, it leads nowhere the landing site has either.
        "templates/promo/sms.en.txt:1: error: sms links to the landing page sale.html, which "
        "no creative builds (landing pages are <creative>/<locale>/<variant>.html)",
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


def test_links_to_landing_pages_no_creative_builds_name_the_template_line(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(settings, "promo/email_subject.en.txt", "Our sale")
    write(settings, "promo/email.en.html", '<h1>Sale</h1>\n<p><a href="{{ url }}">Shop</a></p>')
    write(settings, "promo/email.en.txt", "Sale!\n\nShop: {{ landing_url }}\n")
    write(settings, "promo/sms.en.txt", "{% if user.first_name %}Hi!{% endif %}\nSale: {{ url }}")
    use = CreativeUse("promo-rule", "promo", None, {}, Location("rules/promo.yaml", 3, 10))

    problems = rendered(check_creatives(settings, [use]))

    why = "which no creative builds (templates/promo has no landing.en.html)"
    assert problems == [
        f"templates/promo/email.en.html:2: error: email_html links to the landing page "
        f"promo/en/default.html, {why}",
        f"templates/promo/email.en.txt:3: error: email_text links to the landing page "
        f"promo/en/default.html, {why}",
        f"templates/promo/sms.en.txt:2: error: sms links to the landing page "
        f"promo/en/default.html, {why}",
    ]
    # With the landing page (which states no offer, as the rule has no coupon) all is well.
    write(settings, "promo/landing.en.html", '<h1>Sale</h1><a href="{{ url }}">Shop</a>')
    assert rendered(check_creatives(settings, [use])) == []


def test_a_creative_that_shows_no_offer_renders_and_checks_without_a_coupon(shipped):
    # The thank-you email, SMS and landing page show the coupon only when there is one.
    uses = [
        CreativeUse("thanks", "thank-you", None, {}, Location("rules/thanks.yaml", 5, 10), kind)
        for kind in ("email", "sms")
    ]
    assert rendered(check_creatives(shipped, uses)) == []

    for locale in ("en", "zh-CN"):
        for surface in ("email_subject", "email_html", "email_text", "sms", "landing"):
            result = render_creative(
                shipped, "thank-you", surface, context(shipped, locale=locale, offer={})
            )
            assert isinstance(result, RenderedSurface), (locale, surface, result)
            assert "None" not in result.text and "NUDGE" not in result.text
            assert "¥" not in result.text and "One use per account" not in result.text
    with_coupon = render_creative(shipped, "thank-you", "email_text", context(shipped))
    assert "CN¥20 off orders over CN¥100" in with_coupon.text and "Code WB20" in with_coupon.text


def test_printing_an_offer_fact_without_a_coupon_fails_at_its_template_line(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    write(settings, "note/sms.en.txt", "Thanks!\nYour code: {{ offer.code }} {{ url }}")
    guarded = "<p>Thanks{% if offer.code %} {{ offer.code }}{% endif %}</p>"
    write(settings, "note/landing.en.html", guarded)
    use = CreativeUse("thanks", "note", None, {}, Location("rules/thanks.yaml", 5, 10), "sms")

    assert rendered(check_creatives(settings, [use])) == [
        "templates/note/sms.en.txt:2: error: sms shows the offer's code (offer.code) but rule "
        "'thanks' has no coupon: add a coupon action to the rule, or show it only when there "
        "is one, inside {% if offer.code %}...{% endif %}"
    ]
    # When sending, that message is skipped with the reason, never sent with a blank.
    skipped = render_creative(settings, "note", "sms", context(settings, offer={}))
    assert isinstance(skipped, Skipped)
    assert skipped.reason == "no coupon code to show: the rule needs a coupon action"


def test_a_coupon_creative_used_without_a_coupon_is_one_error_where_it_first_shows_it(
    shipped,
):
    # welcome states its discount on every surface of both locales: one mistake, one error.
    use = CreativeUse("hello", "welcome", None, {}, Location("rules/hello.yaml", 5, 10), "email")
    assert rendered(check_creatives(shipped, [use])) == [
        "templates/welcome/email_subject.en.txt:1: error: email_subject shows the offer's "
        "amount (offer.value) but rule 'hello' has no coupon: add a coupon action to the rule, "
        "or show it only when there is one, inside {% if offer.value %}...{% endif %} "
        "(20 more lines of creative 'welcome' do too)"
    ]
