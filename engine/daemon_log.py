"""What `nudge run` prints: one line per tick or dispatch pass that did something.

Idle ticks print nothing, so a quiet shop has a quiet log. `json` prints one JSON
object per line for log shippers (Loki, CloudWatch, Datadog...): every line has
`ts`, `event` and the fields of that event.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, TextIO

import orjson

from engine import clock

FORMATS = ("text", "json")


class DaemonLog:
    def __init__(self, format: str = "text", stream: TextIO | None = None):
        if format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
        self.format = format
        self.stream = stream or sys.stdout

    def emit(self, event: str, message: str, **fields: Any) -> None:
        if self.format == "json":
            record = {"ts": clock.utcnow().isoformat(), "event": event, **fields}
            line = orjson.dumps(record, default=_plain).decode()
        else:
            line = f"{clock.utcnow().isoformat(timespec='seconds')} {message}"
        print(line, file=self.stream, flush=True)

    def tick(self, evaluation, *, reason: str) -> None:
        """A tick that planned, failed, missed or recorded something; idle ones are silent."""
        busy = [
            o
            for o in evaluation.outcomes
            if o.matched or o.status == "failed" or o.missed or o.audience_removed
        ]
        entries = sum(evaluation.stage_entries.values())
        if not busy and not entries:
            return
        planned = sum(o.planned for o in busy)
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
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
        self.emit("dispatch", f"dispatched {report.claimed}: {outcomes}", **report.as_dict())


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
