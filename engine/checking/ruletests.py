"""Rule unit tests (`nudge test`): rules/tests/*.yaml run on a throw-away database.

Each test gives users and events with times relative to a fixed `now` (the file's,
or the test's own), ingests them through the normal ingest path into a fresh SQLite
file, evaluates every rule at one or more ticks through the normal planner, and
compares exactly which users each named rule planned for, held out and suppressed
(with the reason). The file format and its located errors: ruletest_file.py.

```yaml
now: 2026-11-11T10:00:00+08:00
tests:
  - name: lapsed gold member gets the win-back coupon
    users:
      - {id: u1, member_tier: gold, email: a@example.com, email_opt_in: true}
    events:
      - {user: u1, type: purchase, at: -95d, amount: 300}
    ticks: [0]                     # optional: evaluate at now + each offset, in order
    expect:
      - rule: winback-lapsed-members
        planned: [u1]              # exact set; [] means "nobody"
        held_out: []
        suppressed: {u2: no_consent}
        variants: {u1: standard}   # optional
  - name: a test of another day says so with its own `now`
    now: 2026-12-11T10:00:00+08:00
    ...
```
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.checking.ruletest_file import (
    TIME_FIELDS_EVENTS,
    TIME_FIELDS_USERS,
    Expectation,
    load_test_file,
    relative_offset,
)
from engine.config import Settings
from engine.errors import LocatedError, NudgeError
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.planning import Decision


@dataclass
class CaseResult:
    file: Path
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class TestRun:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(result.passed for result in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "tests": [
                {"file": str(r.file), "name": r.name, "passed": r.passed, "failures": r.failures}
                for r in self.results
            ],
        }


def relative_time(value: Any, now: datetime) -> Any:
    """'-95d' -> now - 95 days, '0' -> now; anything else is left for ingest to parse."""
    if isinstance(value, int | float) and value == 0:
        return now.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if text in ("0", "now"):
            return now.isoformat()
        if text[:1] in ("+", "-") and text[1:]:
            return (now + relative_offset(text)).isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def discover(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def run_rule_tests(settings: Settings, path: Path, ruleset) -> TestRun:
    """Run every test in `path` (a file or a folder) against `ruleset`."""
    run = TestRun()
    with tempfile.TemporaryDirectory(prefix="nudge-test-") as scratch:
        template = Path(scratch) / "template.db"
        _migrated_sqlite(template, settings)
        for file in discover(path):
            try:
                spec = load_test_file(file)
            except LocatedError as exc:
                failures = [d.render(relative_to=Path.cwd()) for d in exc.diagnostics]
                run.results.append(CaseResult(file=file, name="(file)", failures=failures))
                continue
            for index, case in enumerate(spec.tests):
                database = Path(scratch) / f"case-{len(run.results)}-{index}.db"
                shutil.copyfile(template, database)
                result = CaseResult(file=file, name=case.name)
                try:
                    now = spec.now_of(case)
                    result.failures = _run_case(settings, database, now, case, ruleset)
                except NudgeError as exc:
                    result.failures = [str(exc)]
                run.results.append(result)
    return run


def _migrated_sqlite(path: Path, settings: Settings) -> None:
    from engine.store.migrations import upgrade

    store = Store(create_engine_for(f"sqlite:///{path}"), settings)
    upgrade(store)
    store.dispose()


def _run_case(settings: Settings, database: Path, now: datetime, case, ruleset) -> list[str]:
    from engine.ingest import ingest_files
    from engine.planning.runner import evaluate

    isolated = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": f"sqlite:///{database}"})}
    )
    store = Store(create_engine_for(isolated.database_url), isolated)
    folder = database.parent
    try:
        files = []
        if case.users:
            users = [_with_times(u, TIME_FIELDS_USERS, now) for u in case.users]
            files.append(("users", _write_jsonl(folder / f"{database.stem}-users.jsonl", users)))
        if case.events:
            events = [_with_times(e, TIME_FIELDS_EVENTS, now) for e in case.events]
            files.append(("events", _write_jsonl(folder / f"{database.stem}-events.jsonl", events)))
        for kind, file in files:
            report = ingest_files(
                store, [file], now=now, kind=kind, rejects_path=file.with_suffix(".rej")
            )
            if report.rejected:
                first = report.rejected[0]
                return [f"test data rejected: {kind} line {first.line}: {first.reason}"]
        for tick in case.ticks:
            evaluation = evaluate(store, ruleset, at=now + relative_offset(tick), mode="test")
            for outcome in evaluation.outcomes:
                if outcome.status == "failed":
                    return [f"rule {outcome.rule_id} failed at tick {tick}: {outcome.error}"]
        return _compare(store, case.expect, ruleset)
    finally:
        store.dispose()


def _with_times(row: dict[str, Any], fields: tuple[str, ...], now: datetime) -> dict[str, Any]:
    return {
        key: relative_time(value, now) if key in fields else value for key, value in row.items()
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path


def _compare(store: Store, expectations: list[Expectation], ruleset) -> list[str]:
    decisions = Decision.__table__
    failures: list[str] = []
    with store.connect() as connection:
        for expectation in expectations:
            if expectation.rule not in ruleset.rules:
                failures.append(ruleset.describe_missing(expectation.rule))
                continue
            rows = connection.execute(
                sa.select(
                    decisions.c.user_id,
                    decisions.c.outcome,
                    decisions.c.reason,
                    decisions.c.variant,
                ).where(decisions.c.rule_id == expectation.rule)
            ).all()
            actual = _actual(rows)
            failures += _diff_sets(expectation, actual)
    return failures


def _actual(rows) -> dict[str, Any]:
    actual: dict[str, Any] = {
        "planned": set(),
        "held_out": set(),
        "shadow": set(),
        "suppressed": {},
        "variants": {},
    }
    for user_id, outcome, reason, variant in rows:
        if outcome == "suppressed":
            actual["suppressed"][user_id] = reason
        else:
            actual[outcome].add(user_id)
        if variant is not None and outcome != "suppressed":
            actual["variants"][user_id] = variant
    # A user suppressed for one occurrence and planned for another counts as planned.
    for user_id in actual["planned"] | actual["held_out"] | actual["shadow"]:
        actual["suppressed"].pop(user_id, None)
    return actual


def _diff_sets(expectation: Expectation, actual: dict[str, Any]) -> list[str]:
    failures = []
    rule = expectation.rule
    for name in ("planned", "held_out", "shadow"):
        wanted = getattr(expectation, name)
        if wanted is None:
            continue
        got = actual[name]
        missing, extra = sorted(set(wanted) - got), sorted(got - set(wanted))
        if missing or extra:
            failures.append(
                f"{rule}: {name} expected {sorted(set(wanted))}, got {sorted(got)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
    for name in ("suppressed", "variants"):
        wanted = getattr(expectation, name)
        if wanted is None:
            continue
        got = (
            actual[name]
            if name == "suppressed"
            else {user: variant for user, variant in actual["variants"].items() if user in wanted}
        )
        wanted, got = dict(sorted(wanted.items())), dict(sorted(got.items()))
        if wanted != got:
            failures.append(f"{rule}: {name} expected {wanted}, got {got}")
    return failures
