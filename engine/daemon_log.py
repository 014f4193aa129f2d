"""What `nudge run` prints: one line per tick or dispatch pass that did something.

Idle ticks print nothing, so a quiet shop has a quiet log. Text lines start with the
instant in the shop's time zone, to the second (as every command shows time); `json`
prints one JSON object per line for log shippers (Loki, CloudWatch, Datadog...): every
line has `ts` (UTC, ISO 8601), `event` and the fields of that event.

The log also keeps the totals of what it reported, for the one summary line of
`nudge run --once`.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import orjson

from engine import clock

FORMATS = ("text", "json")


class DaemonLog:
    def __init__(
        self, format: str = "text", stream: TextIO | None = None, *, tz: ZoneInfo | None = None
    ):
        if format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
        self.format = format
        self.stream = stream or sys.stdout
        self.tz = tz
        self.planned = 0
        self.held_out = 0
        self.failed_rules = 0
        self.delivered: Counter[str] = Counter()
        # The ticks and each dispatcher log from their own threads: one line at a time.
        self._lock = threading.Lock()

    def emit(self, event: str, message: str, **fields: Any) -> None:
        if self.format == "json":
            record = {"ts": clock.utcnow().isoformat(), "event": event, **fields}
            line = orjson.dumps(record, default=_plain).decode()
        else:
            now = clock.utcnow()
            now = now.astimezone(self.tz) if self.tz is not None else now
            line = f"{now.isoformat(timespec='seconds')} {message}"
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def tick(self, evaluation, *, reason: str) -> None:
        """A tick that planned, failed, missed or recorded something; idle ones are silent."""
        busy = [o for o in evaluation.outcomes if _did_something(o)]
        entries = sum(evaluation.stage_entries.values())
        if not busy and not entries:
            return
        planned = sum(o.planned for o in busy)
        self.planned += planned
        self.held_out += sum(o.held_out for o in busy)
        self.failed_rules += sum(o.status == "failed" for o in busy)
        parts = [f"{o.rule_id} {_outcome_text(o)}" for o in busy]
        message = f"tick ({reason}): planned {planned}" + (f"; {'; '.join(parts)}" if parts else "")
        if entries:
            message += f"; stage entries {entries}"
        self.emit(
            "tick",
            message,
            reason=reason,
            at=evaluation.at,
            planned=planned,
            stage_entries=evaluation.stage_entries,
            rules=[o.as_dict() | {"samples": None} for o in busy],
        )

    def dispatch(self, report) -> None:
        if not report.claimed:
            return
        with self._lock:
            self.delivered.update(report.outcomes)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
        self.emit("dispatch", f"dispatched {report.claimed}: {outcomes}", **report.as_dict())

    def summary(self) -> None:
        """The one line that ends `nudge run --once`: what the run did, in total."""
        delivered = ", ".join(f"{k} {v}" for k, v in sorted(self.delivered.items()))
        text = f"planned {self.planned}, held out {self.held_out}"
        if self.failed_rules:
            text += f", {self.failed_rules} rule{'s' * (self.failed_rules != 1)} failed"
        text += f"; delivered: {delivered or 'nothing due'}"
        self.emit(
            "summary",
            f"run --once: {text}",
            planned=self.planned,
            held_out=self.held_out,
            failed_rules=self.failed_rules,
            delivered=dict(sorted(self.delivered.items())),
        )


def _did_something(outcome) -> bool:
    """Decided for someone, failed, missed slots, or removed audience members."""
    return bool(
        outcome.planned
        or outcome.held_out
        or outcome.shadow
        or sum(outcome.suppressed.values())
        or outcome.status == "failed"
        or outcome.missed
        or outcome.audience_removed
    )


def _outcome_text(outcome) -> str:
    if outcome.status == "failed":
        return f"FAILED: {outcome.error}"
    text = f"planned {outcome.planned}"
    if outcome.held_out:
        text += f", held out {outcome.held_out}"
    suppressed = sum(outcome.suppressed.values())
    if suppressed:
        text += f", suppressed {suppressed}"
    if outcome.missed:
        text += f", missed {outcome.missed} slot(s) older than misfire_grace"
    if outcome.coalesced:
        text += f", {outcome.coalesced} slot(s) coalesced"
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)
