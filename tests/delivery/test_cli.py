"""The delivery commands end to end, with the file backends in a scratch project."""

from __future__ import annotations

import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from delivery_helpers import REPO_TEMPLATES, T0, add_users, outbox_rows, plan, plan_with_offer
from sinks import HttpSink
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
    assert invoke("retry", "--all") == (0, "requeued 1 dead action\n")
    # Requeued, it is listed with the error that killed it until it is delivered.
    data = json.loads(invoke("status", "--json")[1])
    [requeued] = data["retrying"]
    assert (requeued["attempts"], requeued["reason"], requeued["last_error"]) == (
        0,
        "requeued",
        "no endpoint 'nowhere' in nudge.toml [delivery.webhooks]",
    )
    assert (data["dead"], data["counts"]["planned"]) == ([], 1)

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


def http_webhook_project(project_dir, sink_url: str) -> None:
    """nudge.toml: webhooks over HTTP to the sink (endpoint `crm`), retries 30s apart."""
    toml = project_dir / "nudge.toml"
    toml.write_text(
        toml.read_text()
        + f'\n[delivery.webhooks.crm]\nurl = "{sink_url}/hook"\n'
        + '[delivery.webhook]\nbackend = "http"\n'
        + '[delivery.retry]\nmax_attempts = 5\nbase = "30s"\nmax_delay = "1h"\n'
    )


def test_status_shows_retrying_actions_until_they_are_sent(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    with HttpSink(fail_first=1) as sink:
        http_webhook_project(project_dir, sink.url)
        add_users(store, {"id": "u1"})
        action = plan(store, "webhook", "u1", {"url": "crm"})
        error = f"POST {sink.url}/hook: HTTP 503: busy"

        code, output = invoke("dispatch", "--once", "--at", T0.isoformat())
        assert (code, output) == (0, "claimed 1: retry 1\n")
        [row] = outbox_rows(store)
        retry_at = row["next_attempt_at"]
        assert T0 + timedelta(seconds=15) <= retry_at <= T0 + timedelta(seconds=30)

        code, output = invoke("status")
        assert code == 0, output
        local = retry_at.astimezone(ZoneInfo("Asia/Shanghai")).isoformat(sep=" ")
        # The outbox, then (after a blank line) the daemons and rules.
        assert output.splitlines()[7:15] == [
            "oldest pending: 2026-11-11 10:00:00+08:00",
            "",
            "retrying id  rule     user  kind     attempts  next attempt               reason"
            "    last error",
            "-----------  -------  ----  -------  --------  -------------------------  --------"
            f"  {'-' * len(error)}",
            f"{action:<11}  winback  u1    webhook  1         {local}  retrying  {error}",
            "",
            "no daemon has run in the last 7 days (start one: nudge run)",
        ]
        code, output = invoke("status", "--json")
        assert code == 0, output
        data = json.loads(output)
        assert data["retrying"] == [
            {
                "id": action,
                "rule_id": "winback",
                "user_id": "u1",
                "kind": "webhook",
                "attempts": 1,
                "next_attempt_at": str(retry_at),
                "reason": "retrying",
                "last_error": error,
                "updated_at": str(T0),
            }
        ]
        assert (data["retrying_total"], data["dead"], data["dead_total"]) == (1, [], 0)

        code, output = invoke("dispatch", "--once", "--at", retry_at.isoformat())
        assert (code, output) == (0, "claimed 1: sent 1\n")
        assert len(sink.accepted) == 1

    # Sent: nothing is retrying any more, and the earlier error is not shown anywhere.
    code, output = invoke("status")
    assert code == 0
    assert "sent     1" in output.splitlines()
    assert "retrying" not in output and "503" not in output
    data = json.loads(invoke("status", "--json")[1])
    assert (data["retrying"], data["retrying_total"]) == ([], 0)
    assert "503" not in json.dumps(data)


def test_status_cuts_long_lists_and_all_or_json_show_everything(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    with HttpSink(fail_first=1000) as sink:
        http_webhook_project(project_dir, sink.url)
        add_users(store, *({"id": f"u{i:02d}"} for i in range(25)))
        retrying = [plan(store, "webhook", f"u{i:02d}", {"url": "crm"}) for i in range(12)]
        dead = [plan(store, "webhook", f"u{i:02d}", {"url": "nowhere"}) for i in range(12, 25)]
        code, output = invoke("dispatch", "--once", "--at", T0.isoformat(), "--json")
        assert json.loads(output)["outcomes"] == {"dead": 13, "retry": 12}

    def listed(text: str, header: str) -> list[int]:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
        ids = []
        for line in lines[start:]:
            if not line or not line[0].isdigit():
                break
            ids.append(int(line.split()[0]))
        return ids

    code, output = invoke("status")
    assert code == 0, output
    lines = output.splitlines()
    # Retrying: soonest next attempt first; dead: most recent first (then newest id).
    due = sorted((r["next_attempt_at"], r["id"]) for r in outbox_rows(store) if r["id"] in retrying)
    assert listed(output, "retrying id") == [row_id for _, row_id in due][:10]
    assert listed(output, "dead id") == sorted(dead, reverse=True)[:10]
    # Each cut list ends with how many rows it left out.
    more_retrying = lines.index("… and 2 more (nudge status --all / --json)")
    dead_header = next(i for i, line in enumerate(lines) if line.startswith("dead id"))
    more_dead = lines.index("… and 3 more (nudge status --all / --json)")
    assert more_retrying < dead_header < more_dead and lines[more_dead + 1] == ""

    code, output = invoke("status", "--all")
    assert code == 0, output
    assert sorted(listed(output, "retrying id")) == retrying
    assert listed(output, "dead id") == sorted(dead, reverse=True)
    assert "more (nudge status" not in output

    data = json.loads(invoke("status", "--json")[1])
    assert sorted(r["id"] for r in data["retrying"]) == retrying
    assert [d["id"] for d in data["dead"]] == sorted(dead, reverse=True)
    assert (data["retrying_total"], data["dead_total"]) == (12, 13)
    assert data["counts"] == {"planned": 12, "claimed": 0, "sent": 0, "skipped": 0, "dead": 13}
