"""docs/plugins.md's worked example, as written there: a shop's own distribution adds
the `loyalty_points` action kind and the `loyalty` channel through entry points, and a
rule using it is checked, planned and delivered to a real HTTP server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.action_kinds import ACTION_KINDS, get_action_kind
from engine.delivery.channels import CHANNEL_FACTORIES
from engine.delivery.runner import run_dispatcher
from engine.planning.runner import evaluate
from engine.rules.schema import rule_json_schema
from engine.store import open_store
from engine.store.planning import OutboxAction
from tests.conftest import make_settings
from tests.delivery.sinks import HttpSink
from tests.planning.helpers import ingest, ruleset_for, write_rule
from tests.plugins.distributions import installed_from_docs

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SHOP = {"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"}
RULE = """\
trigger: {stage: first_purchase}
actions:
  loyalty_points: {points: 200, reason: first-order}
"""


@pytest.fixture
def loyalty_plugin(tmp_path):
    """nudge-loyalty, built from the docs and installed onto a temporary sys.path entry."""
    with installed_from_docs(tmp_path, "plugin-file", {"pyproject.toml", "nudge_loyalty.py"}):
        yield


def test_the_plugin_kind_and_channel_come_from_its_distribution(loyalty_plugin):
    kind = get_action_kind("loyalty_points")
    assert (kind.channel, kind.consent) == ("loyalty", None)
    assert ACTION_KINDS.distribution("loyalty_points") == "nudge-loyalty"
    assert CHANNEL_FACTORIES.distribution("loyalty") == "nudge-loyalty"
    # Nudge's own kinds are entry points too, of the distribution `nudge`.
    assert ACTION_KINDS.distribution("email") == "nudge"
    assert kind.validate(kind.example).points == 200


def test_the_rule_schema_and_nudge_check_accept_the_plugin_kind(
    loyalty_plugin, project_dir, monkeypatch
):
    schema = rule_json_schema()
    points = schema["properties"]["actions"]["properties"]["loyalty_points"]
    assert points["required"] == ["points", "reason"]
    jsonschema.validate({"trigger": {"stage": "first_purchase"}, **_actions(200)}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"trigger": {"stage": "first_purchase"}, **_actions(0)}, schema)

    settings = make_settings(project_dir, shop=SHOP)
    monkeypatch.chdir(project_dir)
    write_rule(settings, "points", RULE)
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 0, result.output

    write_rule(settings, "points", RULE.replace("points: 200", "points: 0"))
    result = CliRunner().invoke(app, ["check", "--no-store"])
    assert result.exit_code == 1
    assert re.search(r"rules/points\.yaml:3:\d+: error: .*greater than 0", result.output)


def _actions(points: int) -> dict:
    return {"actions": {"loyalty_points": {"points": points, "reason": "first-order"}}}


def test_a_rule_awards_points_through_the_loyalty_api(loyalty_plugin, project_dir, store_url):
    with HttpSink() as sink:
        settings = make_settings(
            project_dir,
            shop=SHOP,
            database={"url": store_url},
            **{"delivery.channels.loyalty": {"url": f"{sink.url}/awards"}},
        )
        store = open_store(settings)
        try:
            write_rule(settings, "first-order-points", RULE)
            ingest(
                store,
                project_dir,
                now=T,
                users=[{"id": "u1"}, {"id": "u2"}],
                events=[
                    {"user": u, "type": "purchase", "at": (T - timedelta(hours=1)).isoformat()}
                    | {"amount": 10}
                    for u in ("u1", "u2")
                ],
            )
            assert evaluate(store, ruleset_for(settings), at=T).outcomes[0].planned == 2

            report = run_dispatcher(store, once=True, at=T + timedelta(minutes=5))

            outbox = OutboxAction.__table__
            with store.connect() as connection:
                rows = connection.execute(
                    sa.select(outbox.c.user_id, outbox.c.kind, outbox.c.state)
                ).all()
                keys = set(connection.scalars(sa.select(outbox.c.idempotency_key)))
        finally:
            store.dispose()
    assert report.outcomes["sent"] == 2
    assert sorted(rows) == [("u1", "loyalty_points", "sent"), ("u2", "loyalty_points", "sent")]
    assert [r["path"] for r in sink.requests] == ["/awards", "/awards"]
    assert sorted(sink.accepted.values(), key=lambda body: body["member"]) == [
        {"member": "u1", "points": 200, "reason": "first-order"},
        {"member": "u2", "points": 200, "reason": "first-order"},
    ]
    # The outbox idempotency key travels as webhook-id: the API can drop a repeated award.
    assert set(sink.accepted) == keys
