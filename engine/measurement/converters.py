"""`nudge audiences export-converters RULE`: the users a rule converted, as a seed audience.

The ad platforms build lookalike audiences from a seed list; the best seed a rule can
give is the shoppers it actually converted. A converter of rule R in a period
[since, until) is a user with at least one purchase credited to one of R's *treated*
(planned) decisions made in the period, by the one attribution of `nudge report`
(engine/measurement/attribution.py: purchases within the rule's window after the
decision, each rule on its own, at or before `until`). The control group's buyers are never
converters: the rule did nothing to them.

Each converter is written like any other audience export (engine/audiences/formats.py:
normalised and hashed per platform, Google Customer Match CSV, Meta `/users` batches,
plain CSV), under the same consent: ads opt-in and no unsubscribe (engine/consent.py).
Converters without it are left out and counted by reason.

Set-based: one grouped query counts the converters per consent refusal, one query
streams the exportable ones in user id order (a server-side cursor on PostgreSQL),
written page by page; no list of users is held in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.audiences.formats import PLATFORMS, AudienceWriter, has_identifier, identifiers_for
from engine.clock import ensure_aware, utcnow
from engine.consent import refusal_sql
from engine.errors import NotFoundError, NudgeError
from engine.measurement.attribution import Windows, conversions_query, rule_windows
from engine.measurement.report import DEFAULT_PERIOD
from engine.rules.fields import did_you_mean
from engine.store import Store
from engine.store.people import User
from engine.store.planning import Decision

users = User.__table__
decisions = Decision.__table__
PAGE = 2_000


@dataclass
class ConvertersResult:
    """What one export wrote, and who was not in it and why."""

    rule: str
    platform: str
    since: datetime
    until: datetime
    converters: int = 0  # treated users with at least one credited purchase
    exported: int = 0  # rows written
    left_out: Counter[str] = field(default_factory=Counter)  # consent refusal -> users
    skipped_no_identifier: int = 0  # consenting, but no usable email or phone
    phones_left_out: Counter[str] = field(default_factory=Counter)  # see formats.phone_of
    files: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "platform": self.platform,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "converters": self.converters,
            "exported": self.exported,
            "left_out": dict(sorted(self.left_out.items())),
            "skipped_no_identifier": self.skipped_no_identifier,
            "phones_left_out": dict(sorted(self.phones_left_out.items())),
            "files": [str(path) for path in self.files],
        }


def converter_ids(rule_id: str, *, since: datetime, until: datetime, windows: Windows) -> sa.Select:
    """SELECT DISTINCT user_id of the users whose purchases are credited to the treated
    decisions of `rule_id` made in [since, until) (purchases at or before `until`)."""
    credited = conversions_query(
        since=since, until=until, windows=windows, rule_ids=[rule_id]
    ).subquery("credited")
    return (
        sa.select(credited.c.user_id)
        .where(credited.c.rule_id == rule_id, credited.c.outcome == "planned")
        .distinct()
    )


def export_converters(
    store: Store,
    rule_id: str,
    platform: str,
    out_dir: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ConvertersResult:
    """Write the consenting converters of `rule_id` in `platform`'s format into `out_dir`.

    The period defaults to the 30 days before now, as `nudge report`'s. Files are named
    `<rule>.converters.<platform>.csv` (Meta: `.0001.json`, ...).
    """
    from engine.rules import load_rules

    if platform not in PLATFORMS:
        raise NudgeError(f"unknown platform {platform!r}; use one of {', '.join(PLATFORMS)}")
    until = ensure_aware(until) if until is not None else utcnow()
    since = ensure_aware(since) if since is not None else until - DEFAULT_PERIOD
    if since >= until:
        raise NudgeError(
            f"the period is empty: --since {since.isoformat()} is not before "
            f"--until {until.isoformat()}"
        )
    loaded = load_rules(store.settings.rules_dir)
    # Every rule's window, not only this one's: the others compete for the purchases.
    windows = rule_windows(loaded.rules.values())
    ids = converter_ids(rule_id, since=since, until=until, windows=windows)
    refusal = refusal_sql(users, "ads")
    counts = (
        sa.select(refusal.label("refusal"), sa.func.count().label("users"))
        .where(users.c.id.in_(ids))
        .group_by(refusal)
    )
    exportable = sa.select(users).where(users.c.id.in_(ids), refusal.is_(None)).order_by(users.c.id)
    result = ConvertersResult(rule=rule_id, platform=platform, since=since, until=until)
    shop_country = store.settings.shop.country
    # One read snapshot: the count Meta's session announces is the rows that follow.
    with store.read() as connection:
        _require_rule(connection, rule_id, sorted(set(loaded.rules) | set(loaded.broken)))
        for reason, n in connection.execute(counts).all():
            result.converters += n
            if reason is not None:
                result.left_out[reason] += n
        writer = AudienceWriter(
            platform,
            out_dir / f"{rule_id}.converters.{platform}",
            estimated_total=result.converters - result.left_out.total(),
            session_seed=f"{rule_id}:converters:{platform}:{since.isoformat()}:{until.isoformat()}",
        )
        rows = connection.execution_options(stream_results=True, yield_per=PAGE).execute(exportable)
        for page in rows.mappings().partitions():
            writer.write(_identified(platform, page, shop_country, result))
    result.exported = writer.count
    result.files = writer.close()
    return result


def _identified(platform: str, rows, shop_country: str, result: ConvertersResult):
    for row in rows:
        values, phone_left_out = identifiers_for(platform, row, shop_country)
        if phone_left_out:
            result.phones_left_out[phone_left_out] += 1
        if platform == "csv" or has_identifier(values):
            yield row["id"], values
        else:
            result.skipped_no_identifier += 1


def _require_rule(connection, rule_id: str, known: list[str]) -> None:
    """A rule with a file (valid or not) or with decisions; else did-you-mean."""
    if rule_id in known:
        return
    decided = sa.select(decisions.c.rule_id).where(decisions.c.rule_id == rule_id).limit(1)
    if connection.execute(decided).first() is not None:
        return
    all_known = set(known) | set(
        connection.execute(sa.select(decisions.c.rule_id).distinct()).scalars()
    )
    raise NotFoundError(f"no rule {rule_id!r}{did_you_mean(rule_id, sorted(all_known))}")
