"""Scaffolding of a new Nudge project folder (`nudge init`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.config import CONFIG_FILE
from engine.rules.schema import SCHEMA_FILE, schema_text

# The repository's own rules/ and templates/ ship as the examples of a new project.
REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CONFIG = """\
# Nudge project settings. Any key can be overridden from the environment as
# NUDGE_<SECTION>_<KEY>, e.g. NUDGE_DATABASE_URL=postgresql+psycopg://user@host/db
[shop]
name = "{name}"
timezone = "Asia/Shanghai"
currency = "CNY"
phone_country_code = "86"
locale = "zh-CN"

[database]
# Empty: a SQLite file nudge.db in this folder.
url = ""

[lifecycle]
new_visitor_days = 30
lapsed_days = 90
churned_days = 365
vip_total_spent = 5000
vip_tiers = ["platinum"]

[events]
# Event types your shop sends. `nudge check` warns about a rule that names a type
# neither listed here nor ingested yet: a typo such as "purchse" would never fire.
known = [
    "visit", "signup", "purchase", "refund", "coupon_redeemed",
    "ad_click", "email_open", "email_click", "unsubscribe",
]
"""


def scaffold(folder: Path, *, name: str | None = None, examples: bool = True) -> list[Path]:
    """Create nudge.toml, rules/, templates/ and rule.schema.json in `folder`; returns
    what was created.

    rule.schema.json is what the first line of every rule file points editors at
    (`# yaml-language-server: $schema=../rule.schema.json`), generated from this
    version's models, action kinds and stages.

    Never overwrites: an existing nudge.toml is an error left to the caller to report.
    """
    folder.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    config = folder / CONFIG_FILE
    if config.exists():
        raise FileExistsError(str(config))
    config.write_text(DEFAULT_CONFIG.format(name=name or folder.resolve().name), encoding="utf-8")
    created.append(config)
    for sub in ("rules", "templates"):
        target = folder / sub
        source = REPO_ROOT / sub
        if examples and source.is_dir() and not target.exists():
            shutil.copytree(source, target)
        else:
            target.mkdir(exist_ok=True)
        created.append(target)
    schema = folder / SCHEMA_FILE
    if not schema.exists():
        schema.write_text(schema_text(), encoding="utf-8")
        created.append(schema)
    return created
