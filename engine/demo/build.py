"""`build_demo`: write the shop's files, ingest them, record stages and KPIs, and give
one example rule a control group so the report has lift to measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.demo.shop import DEMO_FOLDER, DemoFiles, write_demo_files


@dataclass(frozen=True)
class DemoResult:
    """What `build_demo` did: files written, ingest report, stage entries, KPIs, and
    the rules given a demo holdout."""

    files: DemoFiles
    ingest: Any  # engine.ingest.IngestReport
    stages: Any  # engine.lifecycle.StageRefresh
    stats: dict[str, Any]
    holdouts: dict[str, str] = field(default_factory=dict)  # rule id -> holdout added

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": {
                "users": str(self.files.users_path),
                "events": str(self.files.events_path),
                "user_count": self.files.users,
                "event_count": self.files.events,
            },
            "ingest": self.ingest.as_dict(),
            "stage_entries": dict(sorted(self.stages.entered.items())),
            "stats": self.stats,
            "holdouts": self.holdouts,
        }


def build_demo(
    store,
    *,
    now: datetime,
    users: int = 5000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Generate the demo shop, ingest it, record stages, and compute the KPIs at `now`;
    give the rules of `DEMO_HOLDOUTS` found in the project without an experiment a
    control group (`add_demo_holdouts`).

    Refuses a store that already holds users: the demo belongs in a fresh project.
    """
    import sqlalchemy as sa

    from engine.errors import NudgeError
    from engine.ingest import ingest_files
    from engine.lifecycle import refresh_stages, users_table
    from engine.stats import shop_stats

    settings = store.settings
    with store.connect() as connection:
        existing = connection.execute(sa.select(sa.func.count()).select_from(users_table))
        count = existing.scalar_one()
    if count:
        raise NudgeError(
            f"the store already holds {count} users; run `nudge demo` in a fresh project "
            "(nudge init demo-shop && cd demo-shop)"
        )
    files = write_demo_files(
        settings.project_dir / DEMO_FOLDER, now=now, users=users, seed=seed, zone=settings.tz
    )
    report = ingest_files(store, [files.users_path, files.events_path], now=now, progress=progress)
    with store.begin() as connection:
        stages = refresh_stages(connection, settings, now)
    with store.connect() as connection:
        stats = shop_stats(connection, settings, now)
    holdouts = add_demo_holdouts(settings.rules_dir)
    return DemoResult(files=files, ingest=report, stages=stages, stats=stats, holdouts=holdouts)


# Rule -> the holdout the demo gives it when its file has no `experiment` yet: without
# a control group there is no lift to measure. Its rule tests still pass (their users'
# buckets are above 30%).
DEMO_HOLDOUTS = {"first-purchase-thank-you": "30%"}
HOLDOUT_NOTE = "# Added by `nudge demo`: a control group, so `nudge report` can measure the lift."


def add_demo_holdouts(rules_dir: Path) -> dict[str, str]:
    """Append `experiment: {holdout: ...}` to the DEMO_HOLDOUTS rules of `rules_dir`
    that exist and have no `experiment`; returns rule id -> holdout of those changed."""
    from ruamel.yaml import YAML

    added = {}
    for rule_id, holdout in DEMO_HOLDOUTS.items():
        path = rules_dir / f"{rule_id}.yaml"
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        data = YAML(typ="safe").load(text)
        if not isinstance(data, dict) or "experiment" in data:
            continue
        ending = "" if text.endswith("\n") else "\n"
        path.write_text(
            f"{text}{ending}{HOLDOUT_NOTE}\nexperiment:\n  holdout: {holdout}\n", encoding="utf-8"
        )
        added[rule_id] = holdout
    return added
