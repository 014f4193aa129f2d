"""docs/plugins.md's third example: a shop's distribution adds the `pause` delivery
policy through an entry point; `[delivery] policies` places it in the order, and while
the project's PAUSE file exists every action waits (deferred, never dropped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.delivery.config import parse_delivery_config
from engine.delivery.policy_kinds import POLICY_FACTORIES
from engine.delivery.runner import run_dispatcher
from engine.errors import ConfigError
from engine.planning.runner import evaluate
from engine.store import open_store
from engine.store.people import UserTag
from engine.store.planning import OutboxAction
from tests.conftest import make_settings
from tests.planning.helpers import ingest, ruleset_for, write_rule
from tests.plugins.distributions import installed_from_docs

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
SHOP = {"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"}
ORDER = ["consent", "pause", "rule", "send_window", "caps"]
RULE = """\
trigger: {stage: first_purchase}
actions:
  tag: {add: [first-buyer]}
"""


@pytest.fixture
def pause_plugin(tmp_path):
    with installed_from_docs(tmp_path, "policy-plugin-file", {"pyproject.toml", "nudge_pause.py"}):
        yield


def test_nudge_own_policies_are_entry_points_too(pause_plugin):
    assert POLICY_FACTORIES.distribution("pause") == "nudge-pause"
    assert POLICY_FACTORIES.distribution("consent") == "nudge"


def test_an_unregistered_policy_name_is_a_config_error():
    with pytest.raises(ConfigError) as raised:
        parse_delivery_config({"policies": ORDER})
    assert (
        "nudge.toml: delivery.policies: unknown delivery policy 'pause'; "
        "known: consent, rule, send_window, caps"
    ) in str(raised.value)


def test_with_the_plugin_its_name_is_known_and_suggested(pause_plugin):
    assert parse_delivery_config({"policies": ORDER}).policies == tuple(ORDER)
    with pytest.raises(ConfigError) as raised:
        parse_delivery_config({"policies": ["consent", "paus"]})
    assert "unknown delivery policy 'paus' (did you mean 'pause'?)" in str(raised.value)
    assert "known: consent, rule, send_window, caps, pause" in str(raised.value)


def test_the_pause_file_defers_every_action_until_it_is_removed(
    pause_plugin, project_dir, store_url
):
    settings = make_settings(
        project_dir, shop=SHOP, database={"url": store_url}, delivery={"policies": ORDER}
    )
    store = open_store(settings)
    outbox, user_tags = OutboxAction.__table__, UserTag.__table__
    try:
        write_rule(settings, "first-buyer", RULE)
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

        (project_dir / "PAUSE").touch()
        paused = run_dispatcher(store, once=True, at=T + timedelta(minutes=1))
        with store.connect() as connection:
            waiting = connection.execute(
                sa.select(outbox.c.state, outbox.c.reason, outbox.c.next_attempt_at)
            ).all()
            tagged_while_paused = connection.execute(sa.select(user_tags.c.user_id)).all()

        (project_dir / "PAUSE").unlink()
        resumed = run_dispatcher(store, once=True, at=T + timedelta(minutes=10))
        with store.connect() as connection:
            states = connection.execute(sa.select(outbox.c.state)).scalars().all()
            tagged = (
                connection.execute(
                    sa.select(user_tags.c.user_id).where(user_tags.c.tag == "first-buyer")
                )
                .scalars()
                .all()
            )
    finally:
        store.dispose()
    assert paused.outcomes.get("sent", 0) == 0
    # Waiting for the policy's recheck, 5 minutes after the paused pass.
    assert [(state, reason) for state, reason, _ in waiting] == [("planned", "paused")] * 2
    assert {when for _, _, when in waiting} == {T + timedelta(minutes=6)}
    assert tagged_while_paused == []
    assert resumed.outcomes["sent"] == 2
    assert states == ["sent", "sent"]
    assert sorted(tagged) == ["u1", "u2"]
