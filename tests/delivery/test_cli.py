"""The delivery commands end to end, with the file backends in a scratch project."""

from __future__ import annotations

import json

import sqlalchemy as sa
from delivery_helpers import REPO_TEMPLATES, T0, add_users, plan, plan_with_offer
from typer.testing import CliRunner

from cli import app
from engine.store.delivery import UnsubscribeToken

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_dispatch_status_retry_exports(store, project_dir, monkeypatch):
    toml = project_dir / "nudge.toml"
    toml.write_text(
        toml.read_text()
        + f'\n[rules]\ntemplates = "{REPO_TEMPLATES}"\n'
        + '[delivery.webhooks.crm]\nurl = "http://127.0.0.1:9/hook"\n'
        + '[delivery.webhook]\nbackend = "file"\nfolder = "outbox/webhook"\n'
    )
    monkeypatch.chdir(project_dir)
    add_users(store, {"id": "u1", "locale": "en"}, {"id": "u2", "email_opt_in": False})
    plan(store, "coupon", "u1", {"value": 20}, decision_id=1)
    plan(store, "email", "u1", {"creative": "winback"}, decision_id=1)
    plan_with_offer(store, "email", "u2", {"creative": "winback"}, decision_id=2)
    plan(store, "webhook", "u1", {"url": "crm"}, decision_id=1)
    plan(store, "webhook", "u1", {"url": "nowhere"}, decision_id=1)
    plan(store, "audience", "u1", {"name": "vip"}, decision_id=1)

    code, output = invoke("dispatch", "--once", "--at", T0.isoformat(), "--json")
    assert code == 0, output
    assert json.loads(output) == {
        "claimed": 7,
        "outcomes": {"dead": 1, "sent": 5, "skipped": 1},
        "reasons": {"no_consent": 1, "no_endpoint": 1},
    }
    assert len(list((project_dir / "outbox/email").glob("*.eml"))) == 1
    assert len(list((project_dir / "outbox/webhook").glob("*.json"))) == 1

    code, output = invoke("status")
    assert code == 0
    assert output.splitlines()[:7] == [
        "state    actions",
        "-------  -------",
        "planned  0",
        "claimed  0",
        "sent     5",
        "skipped  1",
        "dead     1",
    ]
    assert "no endpoint 'nowhere' in nudge.toml [delivery.webhooks]" in output

    assert invoke("retry") == (1, "Error: give dead action ids, or --all\n")
    assert invoke("retry", "999")[1] == "Error: no outbox action with id 999\n"
    assert invoke("retry", "--all") == (0, "requeued 1 dead action(s)\n")

    code, output = invoke("coupons", "export")
    assert (
        code == 0
        and output.startswith("code,user_id,rule_id,value")
        and ",u1,winback,20.00" in output
    )

    code, output = invoke("audiences", "export", "vip", "--format", "google", "--out", "exports")
    assert code == 0, output
    assert output.splitlines() == [
        "google: +1 -0 (0 without email or phone)",
        "  wrote exports/vip.google.csv",
    ]
    assert invoke("audiences", "export", "vipp")[1] == (
        "Error: no audience 'vipp' has members yet (did you mean 'vip'?)\n"
    )

    with store.connect() as connection:
        token = connection.execute(sa.select(UnsubscribeToken.__table__.c.token)).scalar_one()
    assert invoke("unsubscribe", token) == (0, "unsubscribed u1\n")
    assert invoke("unsubscribe", "nope")[1] == (
        "Error: unknown unsubscribe token (check that it was copied whole)\n"
    )
