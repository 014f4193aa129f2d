"""Expected failures are one line, never a traceback, and never show a password."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from cli_shop import run, shop_fixtures

from engine.presentation.errors import expected_failure, redact_url

shop, in_shop = shop_fixtures()

BAD_URL = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nope"

COMMANDS = [
    ("stats",),
    ("status",),
    ("dry-run",),
    ("users", "show", "u1"),
    ("ingest", "-"),
    ("run", "--once"),
    ("db", "upgrade"),
    ("report",),
    ("coupons", "export"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_database_is_one_line_without_the_password(in_shop, monkeypatch, command):
    monkeypatch.setenv("NUDGE_DATABASE_URL", BAD_URL)
    result = run(*command, input="")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: cannot use the database at postgresql+psycopg://postgres:***@127.0.0.1:1/nope: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    )
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_the_installed_command_prints_one_line_too(in_shop):
    """Outside CliRunner: the real entry point, its stderr and exit code."""
    nudge = Path(sys.executable).parent / "nudge"
    done = subprocess.run(
        [nudge, "stats"],
        capture_output=True,
        text=True,
        env={"NUDGE_DATABASE_URL": BAD_URL, "PATH": "/usr/bin:/bin"},
        cwd=in_shop,
        check=False,
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_init_never_prints_the_password(tmp_path, monkeypatch, postgres_server_url):
    if postgres_server_url is None:
        pytest.skip("needs the PostgreSQL server")
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(password="s3cret")  # trust auth ignores it
    monkeypatch.setenv("NUDGE_DATABASE_URL", url.render_as_string(hide_password=False))
    result = run("init", str(tmp_path / "shop"))
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert "database ready: postgresql+psycopg://postgres:***@" in result.stdout


def test_a_bad_url_scheme_names_it_without_the_password(in_shop, monkeypatch):
    monkeypatch.setenv("NUDGE_DATABASE_URL", "mysql://root:s3cret@db/shop")
    result = run("stats")
    assert result.exit_code == 1
    assert "s3cret" not in result.output and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1


def test_redact_url():
    assert redact_url(BAD_URL) == "postgresql+psycopg://postgres:***@127.0.0.1:1/nope"
    assert redact_url("sqlite:////tmp/nudge.db") == "sqlite:////tmp/nudge.db"


def test_a_bug_is_not_an_expected_failure():
    assert expected_failure(KeyError("x"), BAD_URL) is None
    assert expected_failure(OSError(errno.ENOSPC, "No space left on device"), None) == (
        "the disk is full: free space and retry"
    )
