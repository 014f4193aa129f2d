"""Building small shops for planning tests through the real ingest path."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from engine.ingest import ingest_files
from engine.planning.compile import load_ruleset

WINBACK = """\
trigger: {stage: lapsed_member}
when:
  - member_tier in ["gold", "silver"]
  - total_spent >= 200
experiment:
  holdout: 10%
  variants:
    standard: {weight: 1}
    bigger-coupon: {weight: 1, coupon: {value: 30}}
actions:
  coupon: {value: 20, currency: CNY, min_order: 100, expires_in: 14d}
  email: {creative: winback}
"""


def write_rule(settings, rule_id: str, text: str) -> Path:
    folder = settings.rules_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rule_id}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def ingest(store, folder: Path, *, now: datetime, users=(), events=()) -> None:
    for kind, rows in (("users", users), ("events", events)):
        if not rows:
            continue
        path = folder / f"{kind}-{len(list(folder.iterdir()))}.jsonl"
        path.write_text(
            "".join(json.dumps(row, default=str) + "\n" for row in rows), encoding="utf-8"
        )
        report = ingest_files(
            store, [path], now=now, kind=kind, rejects_path=path.with_suffix(".rej")
        )
        assert not report.rejected, report.rejected


def ruleset_for(settings):
    ruleset = load_ruleset(settings)
    assert not ruleset.errors, [d.render() for d in ruleset.errors]
    return ruleset
