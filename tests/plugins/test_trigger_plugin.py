"""docs/plugins.md's second example: a shop's distribution adds the `cart_abandoned`
trigger kind through an entry point, and a rule file names it like a built-in kind:
checked (its value by the kind's own `validate`), in the schema, planned once per cart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.planning.runner import evaluate
from engine.rules.schema import rule_json_schema
from engine.store import open_store
from engine.store.planning import Decision
from engine.trigger_kinds import TRIGGER_KINDS
from tests.conftest import make_settings
from tests.planning.helpers import ingest, ruleset_for, write_rule
from tests.plugins.distributions import installed_from_docs

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SHOP = {"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"}
RULE = """\
trigger: {cart_abandoned: 1h}
unless: has_tag("no-reminders")
actions:
  tag: {add: [cart-reminded]}
"""


@pytest.fixture
def carts_plugin(tmp_path):
    with installed_from_docs(tmp_path, "trigger-plugin-file", {"pyproject.toml", "nudge_carts.py"}):
        yield


def test_the_kind_comes_from_its_distribution(carts_plugin):
    assert TRIGGER_KINDS.distribution("cart_abandoned") == "nudge-carts"
    assert TRIGGER_KINDS.distribution("event") == "nudge"


def test_nudge_check_and_the_schema_know_the_plugin_kind(carts_plugin, project_dir, monkeypatch):
    schema = rule_json_schema()
    trigger = schema["$defs"]["Trigger"]
    assert "abandoned cart" in trigger["properties"]["cart_abandoned"]["description"]
    assert {"required": ["cart_abandoned"]} in trigger["oneOf"]
    jsonschema.validate(
        {"trigger": {"cart_abandoned": "1h"}, "actions": {"tag": {"add": ["x"]}}}, schema
    )

    settings = make_settings(project_dir, shop=SHOP)
    monkeypatch.chdir(project_dir)
    write_rule(settings, "cart-reminder", RULE)
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 0, result.output

    # The kind's own validate speaks at the value's place.
    write_rule(settings, "cart-reminder", RULE.replace("1h", "soon"))
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 1
    assert re.search(r"rules/cart-reminder\.yaml:1:27: error: .*'soon'", result.output), (
        result.output
    )

    # A misspelt kind is an unknown key at its own place, with the plugin kind suggested.
    write_rule(settings, "cart-reminder", RULE.replace("cart_abandoned", "cart_abandonned"))
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 1
    assert re.search(
        r"rules/cart-reminder\.yaml:1:11: error: unknown key 'cart_abandonned'.*cart_abandoned",
        result.output,
    ), result.output

    # Two kinds at once name every kind there is, the plugin's too.
    write_rule(
        settings,
        "cart-reminder",
        RULE.replace("{cart_abandoned: 1h}", "{cart_abandoned: 1h, stage: first_purchase}"),
    )
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 1
    assert "exactly one of stage, event, schedule, after, cart_abandoned" in result.output


def test_without_the_plugin_the_kind_is_an_unknown_key(project_dir, monkeypatch):
    settings = make_settings(project_dir, shop=SHOP)
    monkeypatch.chdir(project_dir)
    write_rule(settings, "cart-reminder", RULE)
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 1
    assert re.search(
        r"cart-reminder\.yaml:1:11: error: unknown key 'cart_abandoned'", result.output
    )


def test_a_rule_with_the_plugin_kind_plans_once_per_abandoned_cart(
    carts_plugin, project_dir, store_url
):
    settings = make_settings(project_dir, shop=SHOP, database={"url": store_url})
    store = open_store(settings)
    try:
        write_rule(settings, "cart-reminder", RULE)

        def event(user, kind, ago, **more):
            at = (T - ago).isoformat()
            return {"id": f"{user}-{kind}-{at}", "user": user, "type": kind, "at": at} | more

        ingest(
            store,
            project_dir,
            now=T,
            users=[{"id": u} for u in ("left", "fresh", "bought", "readded", "optout")]
            + [{"id": "quiet", "tags": ["no-reminders"]}],
            events=[
                event("left", "add_to_cart", timedelta(hours=2)),  # abandoned
                event("fresh", "add_to_cart", timedelta(minutes=30)),  # not yet an hour
                event("bought", "add_to_cart", timedelta(hours=3)),
                event("bought", "purchase", timedelta(hours=2), amount=10),  # bought it
                event("readded", "add_to_cart", timedelta(hours=5)),
                event("readded", "add_to_cart", timedelta(hours=2)),  # one cart: the last
                event("quiet", "add_to_cart", timedelta(hours=2)),  # `unless` holds
            ],
        )
        first = evaluate(store, ruleset_for(settings), at=T).outcomes[0]
        again = evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=1)).outcomes[0]
        later = evaluate(store, ruleset_for(settings), at=T + timedelta(hours=1)).outcomes[0]
        decisions = Decision.__table__
        with store.connect() as connection:
            rows = connection.execute(
                sa.select(decisions.c.user_id, decisions.c.outcome).order_by(decisions.c.user_id)
            ).all()
    finally:
        store.dispose()
    assert (first.planned, again.planned) == (2, 0)
    # An hour later the fresh cart is abandoned too; the others are not planned again.
    assert later.planned == 1
    planned = [user for user, outcome in rows if outcome == "planned"]
    assert planned == ["fresh", "left", "readded"]
    assert "quiet" not in planned and "bought" not in planned
