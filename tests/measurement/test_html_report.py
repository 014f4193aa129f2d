"""`nudge report --html`: one self-contained page, built through the real path.

A small shop: 60 signups, a rule with a 30% holdout and two variants (its description
carries markup that must stay text), coupons and emails delivered, purchases ingested
(some buyers again in December, for the cohort table and the weekly trend). The page
must hold every verdict, inline SVG charts, nothing to fetch from a network, and in
headless Chromium at a phone's size: no request but the file, no console error, no
horizontal scrolling of the page. The screenshot goes to test-artifacts/report/.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import CHROMIUM_ARGS, make_settings, service_missing
from typer.testing import CliRunner

from cli import app
from engine.config import load_settings
from engine.delivery.runner import run_dispatcher
from engine.measurement.groups import Group, Report, RuleReport, measure
from engine.measurement.html import render_html_report, trend_buckets
from engine.measurement.report import build_report
from engine.planning.runner import evaluate
from engine.store import Store
from engine.store.planning import Decision
from tests.planning.helpers import ingest, ruleset_for, write_rule

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "report"
CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SENT = T + timedelta(hours=1)
DAY = timedelta(days=1)
SINCE, UNTIL = T - DAY, T + 20 * DAY  # into December: two cohort months, three weeks
TEMPLATES = REPO / "templates"
RULE = "welcome-offer"
HOSTILE = '<script>alert("x")</script> & 欢迎'
WELCOME = f"""\
description: '{HOSTILE}'
trigger: {{event: signup}}
experiment:
  holdout: 30%
  variants:
    amount: {{weight: 1}}
    percent: {{weight: 1, coupon: {{value: null, percent_off: 20}}}}
actions:
  coupon: {{value: 10, expires_in: 30d}}
  email: {{creative: welcome}}
"""
runner = CliRunner()


class Page(HTMLParser):
    """The page's text, its tags, and every URL it would load or link to."""

    LOADING = {"src", "href", "srcset", "poster", "data", "action", "xlink:href"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.styles: list[str] = []
        self.chunks: list[str] = []
        self._in_style = False
        self.feed(text)
        self.close()
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in self.LOADING and value is not None:
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.styles.append(value)

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        else:
            self.chunks.append(data)


def assert_self_contained(page: Page) -> None:
    assert "script" not in page.tags
    external = [
        (tag, name, value)
        for tag, name, value in page.urls
        if not value.startswith("#")  # in-page anchors and SVG references only
    ]
    assert external == []
    for css in page.styles:
        assert "url(" not in css.replace("url(#", "") and "@import" not in css


@pytest.fixture
def shop(store, tmp_path, monkeypatch):
    """60 signups at T; ~30% held out, the rest get a coupon and an email at SENT; 40%
    of the recipients and 10% of the control group buy the next day, a few again on
    December 2 (the percent variant's first buyers with their code)."""
    toml = store.settings.project_dir / "nudge.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8") + f'[rules]\ntemplates = "{TEMPLATES}"\n',
        encoding="utf-8",
    )
    store = Store(engine=store.engine, settings=load_settings(toml.parent, environ={}))
    settings = store.settings
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, RULE, WELCOME)
    ids = [f"u{n:02d}" for n in range(60)]
    users = [{"id": u, "email": f"{u}@example.com", "email_opt_in": True, "locale": "en"}
             for u in ids]  # fmt: skip
    signups = [{"user": u, "type": "signup", "at": (T - timedelta(hours=1)).isoformat()}
               for u in ids]  # fmt: skip
    ingest(store, tmp_path, now=T, users=users, events=signups)
    evaluate(store, ruleset_for(settings), at=T)
    run_dispatcher(store, once=True, at=SENT)
    report = build_report(store, since=SINCE, until=SENT + timedelta(minutes=1))
    (rule,) = report.rules
    assert rule.control.recipients > 0 and rule.treated.recipients > 0

    table = Decision.__table__
    with store.read() as connection:
        outcome = dict(connection.execute(sa.select(table.c.user_id, table.c.outcome)).all())
    held = sorted(u for u, o in outcome.items() if o == "held_out")
    treated = sorted(u for u, o in outcome.items() if o == "planned")
    buyers = [u for i, u in enumerate(treated) if i % 10 < 4]
    buyers += [u for i, u in enumerate(held) if i % 10 < 1]
    again = T + 12 * DAY  # 2026-12-02 in Shanghai
    purchases = [purchase(u, SENT + DAY, 100, f"o{n}") for n, u in enumerate(buyers)]
    purchases += [purchase(u, again, 60, f"r{n}") for n, u in enumerate(buyers[:3])]
    ingest(store, tmp_path, now=again + DAY, events=purchases)
    return store


def purchase(user: str, at: datetime, amount: int, order_id: str) -> dict:
    return {"user": user, "type": "purchase", "at": at.isoformat(), "amount": amount,
            "order_id": order_id}  # fmt: skip


def write_page(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "out" / "report.html"
    period = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    result = runner.invoke(app, ["report", *period, "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"HTML report written to {out}\n"
    return out, out.read_text(encoding="utf-8")


def test_the_page_holds_every_verdict_and_inline_charts_and_fetches_nothing(shop, tmp_path):
    out, html = write_page(tmp_path)
    report = build_report(shop, since=SINCE, until=UNTIL)

    page = Page(html)
    assert html.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    # One verdict per comparison: treated vs control, each variant, percent vs amount.
    (rule,) = report.rules
    verdicts = [rule.lift["verdict"], rule.treated.revenue_lift["verdict"]]
    verdicts += [variant.lift["verdict"] for variant in rule.variants]
    verdicts += [comparison["lift"]["verdict"] for comparison in rule.comparisons]
    assert len(verdicts) == 5
    for verdict in verdicts:
        assert verdict in page.text
    assert f"Verdict: {rule.lift['verdict']}" in page.text
    # Charts: funnel, groups, lift per rule; the weekly trend and the cohort heatmap.
    assert html.count("<svg") == 5 and page.tags.count("svg") == 5
    assert "fixed horizon 95% CI" in page.text and "always valid 95% CI" in page.text
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    # The description is text, never markup, in the page and in its charts.
    assert "<script" not in html
    assert HOSTILE in page.text
    # The shop's KPIs, in its locale (zh-CN) and currency.
    assert "¥" in page.text and "CN¥" not in page.text
    assert "Nov" not in page.text  # Babel dates in Chinese: 11月20日
    assert "2026年11月19日 10:00:00" in page.text and "11月26日" in page.text  # week 2
    for label in ("GMV (purchases - refunds)", "repeat-purchase rate", "email CTR"):
        assert label in page.text
    assert "2026-11" in page.text  # one cohort, some of it buying again in December:
    assert "M1" in page.text


def test_an_empty_period_gives_a_valid_page_that_says_so(store, settings, tmp_path, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    out = tmp_path / "empty.html"
    args = ["report", "--since", "2026-11-01", "--until", "2026-11-02", "--html", str(out)]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    page = Page(out.read_text(encoding="utf-8"))
    assert_self_contained(page)
    assert (
        "No decisions between 2026-11-01 00:00:00+08:00 and 2026-11-02 00:00:00+08:00: "
        "nothing to report."
    ) in page.text
    assert "Nothing happened in this period" in page.text
    assert "No first purchases in this period." in page.text
    assert "svg" not in page.tags
    result = runner.invoke(app, [*args, "--json"])  # the JSON still goes to stdout
    assert result.exit_code == 0 and json.loads(result.output)["empty"] is True


def test_names_and_descriptions_are_escaped_in_the_page_and_in_the_charts(tmp_path):
    """A variant name with markup (a store can hold any text) stays text everywhere; a
    rule without a control group has no lift chart, and says why."""
    settings = make_settings(tmp_path, shop={"timezone": "Asia/Shanghai", "currency": "CNY"})
    evil = "<script>alert(1)</script>"
    variant = Group(evil, audience=50, recipients=50, conversions=20, orders=20)
    variant.revenue, variant.revenue_sq = Decimal("2000"), 20 * 100.0**2
    rule = RuleReport(rule="r", window=timedelta(days=7), description=f"{evil} & more")
    rule.variants = [variant]
    rule.treated = Group(evil)
    rule.treated.add(variant)
    rule.control = Group("control", audience=40, recipients=40, conversions=4, orders=4)
    rule.control.revenue, rule.control.revenue_sq = Decimal("400"), 4 * 100.0**2
    measure(rule.treated, rule.control, 0.05)
    alone = RuleReport(rule="no-holdout", window=timedelta(days=7))
    alone.variants = [Group("treated", audience=9, recipients=9, conversions=3, orders=3)]
    alone.treated = alone.variants[0]
    measure(alone.treated, alone.control, 0.05)
    report = Report(since=T - DAY, until=T, currency="CNY", rules=[rule, alone])

    html = render_html_report(report, None, settings)

    assert "<script" not in html
    page = Page(html)
    assert_self_contained(page)
    assert f"{evil} & more" in page.text
    assert page.text.count(evil) >= 3  # description, table head, lift label
    charts = re.findall(r"<svg\b.*?</svg>", html, re.S)
    assert len(charts) == 5  # funnel, groups, lift; funnel, groups
    assert all("&lt;script" in chart for chart in charts[1:3])  # labels, aria-labels
    assert "Verdict: not enough data yet (control without any recipients)" in page.text
    assert "Shop KPIs" not in page.text


def test_trend_buckets_are_weeks_from_the_start_or_months():
    zone = ZoneInfo("Asia/Shanghai")
    unit, weeks = trend_buckets(SINCE, UNTIL, zone)
    assert unit == "week" and len(weeks) == 3
    assert weeks[0].starts == SINCE and weeks[1].starts == SINCE + 7 * DAY
    assert weeks[-1].ends == UNTIL
    unit, months = trend_buckets(SINCE, SINCE + 200 * DAY, zone)
    assert unit == "month" and months[0].starts == SINCE and months[-1].ends == SINCE + 200 * DAY
    assert all(a.ends == b.starts for a, b in pairwise(months))


def page_width(page) -> int:
    """How wide the page's content is, in CSS pixels: wider than the screen means the
    page scrolls sideways."""
    return page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth,"
        " document.body.getBoundingClientRect().right)"
    )


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_page_on_a_phone_fetches_nothing_and_fits_the_screen(shop, tmp_path):
    if not CHROMIUM.exists():
        service_missing("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    out, _ = write_page(tmp_path)
    # A control page proves the recorder sees and blocks what the report must not do.
    control = tmp_path / "control.html"
    control.write_text('<img src="https://example.com/x.png" alt="">', encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
            requests: list[str] = []

            def block(route):
                requests.append(route.request.url)
                if route.request.url.startswith("file://"):
                    route.continue_()
                else:
                    route.abort()

            context.route("**/*", block)
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(control.as_uri())
            page.wait_for_load_state("load")
            assert "https://example.com/x.png" in requests

            requests.clear()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(out.as_uri())
            page.wait_for_load_state("load")
            assert response is not None and response.ok
            assert set(requests) == {out.as_uri()}
            assert errors == []
            assert page_width(page) <= PHONE["width"]
            assert page.locator("svg").count() == 5
            assert page.locator("svg").first.bounding_box()["width"] <= PHONE["width"]
            assert page.locator(".scroll").count() >= 4  # the wide tables have their box
            page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=True)
            # The width check sees an overflow when there is one.
            page.evaluate(
                "() => { const wide = document.createElement('div');"
                " wide.style.width = '800px'; wide.textContent = 'wide';"
                " document.querySelector('main').append(wide); }"
            )
            assert page_width(page) > PHONE["width"]
            page.reload()
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(ARTIFACTS / "report-desktop.png"), full_page=True)
            assert set(requests) == {out.as_uri()} and errors == []
        finally:
            browser.close()
