"""A small demo shop built through the CLI at a frozen instant, for the CLI tests.

Built once per test module (60 shoppers, seeded): the commands' output is the same on
every run, so it can be compared with snapshots. A module takes the fixtures with
`shop, in_shop = shop_fixtures()` (tests/ keeps one conftest.py: sub-folder conftests
would shadow its `from conftest import ...`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

FROZEN = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in the demo shop (Asia/Shanghai)
SNAPSHOTS = Path(__file__).parent / "snapshots"


def run(*args: str, input: str | None = None):
    """One command, as a person would type it, with colour off."""
    return CliRunner().invoke(app, list(args), input=input, env={"NO_COLOR": "1"})


# Modules that bound engine.clock.utcnow at import; the others read it at call time.
_CLOCK_READERS = (
    "engine.delivery.runner",
    "engine.measurement.converters",
    "engine.measurement.report",
)


def freeze_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin Nudge's one clock (engine/clock.py) at FROZEN.

    Not freezegun: its fake datetime class is not a datetime to orjson, which the
    ingest path uses.
    """
    import importlib

    monkeypatch.setattr("engine.clock.utcnow", lambda: FROZEN)
    for name in _CLOCK_READERS:
        monkeypatch.setattr(importlib.import_module(name), "utcnow", lambda: FROZEN)


def _build_shop(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "shop"
    previous = Path.cwd()
    with pytest.MonkeyPatch.context() as monkeypatch:
        freeze_clock(monkeypatch)
        assert run("init", str(folder)).exit_code == 0
        os.chdir(folder)
        try:
            built = run("demo", "--users", "60")
            assert built.exit_code == 0, built.output
            planned = run("run", "--once", "--no-dispatch")
            assert planned.exit_code == 0, planned.output
        finally:
            os.chdir(previous)
    return folder


def _in_shop(shop, monkeypatch) -> Path:
    monkeypatch.chdir(shop)
    freeze_clock(monkeypatch)
    return shop


def shop_fixtures():
    """(shop, in_shop): the shop built once per module; a test inside it, clock frozen."""
    return pytest.fixture(scope="module", name="shop")(_build_shop), pytest.fixture(name="in_shop")(
        _in_shop
    )


def matches_snapshot(name: str, text: str) -> None:
    """`text` equals snapshots/<name>.txt; NUDGE_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("NUDGE_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
