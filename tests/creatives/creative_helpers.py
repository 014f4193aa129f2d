"""Shared helpers of the creatives tests: a scratch project with the shipped templates."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from engine.config import Settings, load_settings
from engine.creatives.context import build_context

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
OFFER = {"value": 20, "currency": "CNY", "min_order": 100, "expires_in": "14d", "code": "WB20"}


def project(folder: Path, *, templates: bool = True) -> Settings:
    """A project folder with nudge.toml and (a copy of) the shipped templates."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nudge.toml").write_text(
        '[shop]\nname = "Test Shop"\ntimezone = "Asia/Shanghai"\ncurrency = "CNY"\n'
        'locale = "zh-CN"\n',
        encoding="utf-8",
    )
    if templates:
        shutil.copytree(REPO / "templates", folder / "templates")
    else:
        (folder / "templates").mkdir()
    return load_settings(folder, environ={})


def write(settings: Settings, relative: str, text: str) -> Path:
    path = settings.templates_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def context(settings: Settings, *, locale: str = "en", offer: dict | None = None, **user):
    return build_context(
        {"id": "u1", "name": "Alex Morgan", "locale": locale, **user},
        OFFER if offer is None else offer,
        rule_id="winback-lapsed-members",
        variant="standard",
        settings=settings,
        base_url="https://shop.example.com/lp",
        secret=b"test-secret",
        now=NOW,
    )
