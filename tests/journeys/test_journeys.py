"""`nudge journeys` in the engine: follow-up trees, groups, loops, text and HTML."""

from __future__ import annotations

import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import CHROMIUM_ARGS, service_missing

from engine.journeys import load_journeys, render_html, render_text

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "journeys"
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<script>alert("x")</script> & 欢迎'

# An abandoned-cart sequence (two follow-ups of one rule, one of them followed again),
# an exclusive group across it, a loop of follow-ups with a rule hanging off it, and an
# invalid rule.
RULES = {
    "cart-seen": f"description: '{HOSTILE}'\ntrigger: {{event: add_to_cart}}\n",
    "cart-reminder": (
        "status: shadow\ntrigger: {after: cart-seen, wait: 1d}\n"
        'unless:\n  - count("purchase", since="trigger") >= 1\n  - has_tag("no-reminders")\n'
    ),
    "cart-last-call": (
        "status: paused\ntrigger: {after: cart-reminder, wait: 2d}\n"
        "exclusive_group: cart\npriority: 10\n"
    ),
    "cart-sms": "trigger: {after: cart-seen, wait: 12h}\nexclusive_group: cart\npriority: 20\n",
    "loop-a": "trigger: {after: loop-b, wait: 1d}\n",
    "loop-b": "trigger: {after: loop-a, wait: 2d}\n",
    "loop-c": "trigger: {after: loop-b, wait: 3d}\n",
    "lonely": "trigger: {stage: vip}\nwhen: total_spent > 1000\n",
    "broken": "trigger: {stage: vipp}\n",
}


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for rule_id, text in RULES.items():
        body = text + "actions:\n  tag: {add: [x]}\n"
        (folder / f"{rule_id}.yaml").write_text(body, encoding="utf-8")
    return folder


def test_the_shipped_follow_up_chain_is_a_journey():
    journeys = load_journeys(REPO / "rules")
    assert [tree.step.rule_id for tree in journeys.journeys] == ["first-purchase-thank-you"]
    (follow_up,) = journeys.journeys[0].follow_ups
    assert follow_up.step.rule_id == "cross-sell-after-first-purchase"
    assert (follow_up.step.wait, follow_up.step.unless) == (
        "3d",
        ('count("purchase", since="trigger") >= 1',),
    )
    text = render_text(journeys)
    assert (
        "Journeys (rules linked by `after:`)\n"
        "  first-purchase-thank-you [active] stage: first_purchase\n"
        "  └─ after 3d: cross-sell-after-first-purchase [active]\n"
        '        unless: count("purchase", since="trigger") >= 1\n'
    ) in text
    assert (
        "  winback-lapsed-members [active] stage: lapsed_member [group winback, priority 50]\n"
    ) in text
    assert "Exclusive groups" in text and "  winback: winback-lapsed-members (50)\n" in text
    assert "Cycles" not in text and "Skipped" not in text


def test_trees_groups_loops_and_skipped_rules(rules_dir):
    journeys = load_journeys(rules_dir)
    assert render_text(journeys) == textwrap.dedent("""\
        Journeys (rules linked by `after:`)
          cart-seen [active] event: add_to_cart
          ├─ after 12h: cart-sms [active] [group cart, priority 20]
          └─ after 1d: cart-reminder [shadow]
             │  unless: (count("purchase", since="trigger") >= 1) or (has_tag("no-reminders"))
             └─ after 2d: cart-last-call [paused] [group cart, priority 10]
          loop-a [active] (after loop-b, wait 1d)
          └─ after 2d: loop-b [active]
             │  then back to loop-a: a cycle, not followed further
             └─ after 3d: loop-c [active]

        Single-step rules
          lonely [active] stage: vip

        Exclusive groups (at most one rule acts per user and run; first wins)
          cart: cart-sms (20), cart-last-call (10)

        Cycles (rules that follow each other in a loop)
          loop-a -> loop-b -> loop-a

        Skipped: invalid rules, see `nudge check`
          broken
        """)


def test_json_shape(rules_dir):
    data = json.loads(json.dumps(load_journeys(rules_dir).as_dict()))
    assert set(data) == {
        "rules", "journeys", "single_steps", "exclusive_groups", "cycles", "skipped",
    }  # fmt: skip
    reminder = next(rule for rule in data["rules"] if rule["id"] == "cart-reminder")
    assert reminder == {
        "id": "cart-reminder",
        "status": "shadow",
        "description": "",
        "trigger": "after: cart-seen",
        "after": "cart-seen",
        "wait": "1d",
        "unless": ['count("purchase", since="trigger") >= 1', 'has_tag("no-reminders")'],
        "exclusive_group": None,
        "priority": 0,
    }
    assert data["journeys"][0] == {
        "rule": "cart-seen",
        "wait": None,
        "back_to": None,
        "follow_ups": [
            {"rule": "cart-sms", "wait": "12h", "back_to": None, "follow_ups": []},
            {
                "rule": "cart-reminder",
                "wait": "1d",
                "back_to": None,
                "follow_ups": [
                    {"rule": "cart-last-call", "wait": "2d", "back_to": None, "follow_ups": []}
                ],
            },
        ],
    }
    assert data["journeys"][1]["follow_ups"][0]["back_to"] == "loop-a"
    assert data["single_steps"] == ["lonely"]
    assert data["exclusive_groups"] == {"cart": ["cart-sms", "cart-last-call"]}
    assert data["cycles"] == [["loop-a", "loop-b"]]
    assert data["skipped"] == ["broken"]


def test_a_longer_loop_is_reported_once_in_running_order(tmp_path):
    for rule_id, follows in (("c", "b"), ("a", "c"), ("b", "a")):
        (tmp_path / f"{rule_id}.yaml").write_text(
            f"trigger: {{after: {follows}, wait: 1d}}\nactions:\n  tag: {{add: [x]}}\n",
            encoding="utf-8",
        )
    journeys = load_journeys(tmp_path)
    assert journeys.cycles == [["a", "b", "c"]]
    assert "  a -> b -> c -> a\n" in render_text(journeys)
    assert sum(tree.size() for tree in journeys.trees) == 3  # each rule drawn once


def test_no_rules_at_all(tmp_path):
    assert render_text(load_journeys(tmp_path)) == "No rules.\n"
    assert "<p>No rules.</p>" in render_html(load_journeys(tmp_path))


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]

    def handle_data(self, data):
        self.text.append(data)


def test_the_page_shows_every_step_escapes_text_and_fetches_nothing(rules_dir):
    page = render_html(load_journeys(rules_dir))
    parsed = _Page()
    parsed.feed(page)
    text = " ".join(" ".join(parsed.text).split())
    assert "script" not in parsed.tags and parsed.urls == []
    assert HOSTILE in text  # shown as text...
    assert "<script>alert" not in page  # ...never as markup
    for rule_id in set(RULES) - {"broken"}:
        assert f'id="rule-{rule_id}"' in page
    assert "9 rules" not in text and "8 rules: 2 journeys of 7 steps in all" in text
    assert "group cart · priority 20" in text and "shadow" in text and "paused" in text
    assert "after 12h" in text and "after 1d" in text
    assert 'unless count("purchase", since="trigger") >= 1 or has_tag("no-reminders")' in text
    assert "loop-a → loop-b → loop-a" in text and "then back to loop-a" in text


@pytest.mark.browser
def test_the_page_opens_in_chromium_without_errors_and_fits_a_phone(rules_dir, tmp_path):
    if not CHROMIUM.exists():
        service_missing("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "journeys.html"
    out.write_text(render_html(load_journeys(rules_dir)), encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
            requests: list[str] = []
            context.route(
                "**/*",
                lambda route: (
                    requests.append(route.request.url),
                    route.continue_() if route.request.url.startswith("file://") else route.abort(),
                ),
            )
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(out.as_uri())
            page.wait_for_load_state("load")
            assert response is not None and response.ok
            assert errors == [] and set(requests) == {out.as_uri()}
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert page.locator(".step").count() == 8
            assert page.locator("ul.tree ul .step").count() == 5  # the follow-ups, nested
            page.screenshot(path=str(ARTIFACTS / "journeys-phone.png"), full_page=True)
        finally:
            browser.close()
