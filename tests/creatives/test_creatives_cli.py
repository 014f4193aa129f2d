"""`nudge preview` and `nudge landing build` from the command line."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import sqlalchemy as sa
from creative_helpers import REPO
from typer.testing import CliRunner

from cli import app
from engine.store.people import User

runner = CliRunner()


def test_preview_a_real_user_from_the_store(store, settings, project_dir, monkeypatch):
    shutil.copytree(REPO / "templates", project_dir / "templates")
    stamp = datetime(2026, 10, 1, tzinfo=UTC)
    with store.begin() as connection:
        connection.execute(
            sa.insert(User.__table__),
            [
                {
                    "id": "u42",
                    "name": "Lin Mei",
                    "email": "lin@example.com",
                    "locale": "en-GB",
                    "timezone": "Europe/London",
                    "attributes": {},
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            ],
        )
    monkeypatch.chdir(project_dir)
    monkeypatch.setenv("NUDGE_SECRET_KEY", "cli-secret")
    out = project_dir / "preview"
    result = runner.invoke(
        app, ["preview", "winback", "--user", "u42", "--offer", "value=30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"winback (en) -> {out}"
    assert "ad:google.search.headline_1" in result.output
    email = (out / "email.txt").read_text(encoding="utf-8")
    assert email.startswith("Hi Lin,\n")
    assert "CN¥30 off orders over CN¥100" in email
    assert "lin@example.com" not in (out / "ads.txt").read_text(encoding="utf-8")
    assert "We Miss You: CN¥30 Off" in (out / "ads.txt").read_text(encoding="utf-8")
    assert "utm_campaign=preview" in (out / "sms.txt").read_text(encoding="utf-8")


def test_preview_unknown_user_and_creative_are_expected_errors(
    store, settings, project_dir, monkeypatch
):
    shutil.copytree(REPO / "templates", project_dir / "templates")
    monkeypatch.chdir(project_dir)
    result = runner.invoke(app, ["preview", "winback", "--user", "nobody"])
    assert result.exit_code == 1
    assert "Error: no user 'nobody' in the store" in result.output
    result = runner.invoke(app, ["preview", "../winback"])
    assert result.exit_code == 1
    assert "Error: invalid creative name '../winback'" in result.output


def test_landing_build_writes_a_static_site(tmp_path, monkeypatch):
    project = tmp_path / "shop"
    project.mkdir()
    (project / "nudge.toml").write_text('[shop]\nname = "CLI Shop"\n', encoding="utf-8")
    shutil.copytree(REPO / "templates", project / "templates")
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["landing", "build", "--out", "site"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "12 pages, index: site/index.html"
    page = (project / "site" / "winback" / "en" / "default.html").read_text(encoding="utf-8")
    assert "CN¥20 off orders over CN¥100" in page
    assert "&amp;t=" not in page  # a published page carries no personal token
    assert 'href="winback/zh-CN/default.html"' in (project / "site" / "index.html").read_text(
        encoding="utf-8"
    )
