"""What an ingest did: counts, rejected rows, and the rejects files written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Rejects kept in memory for the report; all of them always go to the rejects file,
# so a file of a million bad rows does not need a million objects.
MAX_REJECTS_IN_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class Reject:
    """One row that was not stored, located by file and 1-based line."""

    file: str
    line: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass
class FileReport:
    """Counts for one input file."""

    file: str
    kind: str
    format: str
    rows_read: int = 0
    rejected: int = 0
    rejects_path: str | None = None


@dataclass
class IngestReport:
    """Totals over every input of one `ingest_files` call."""

    files: list[FileReport] = field(default_factory=list)
    rows_read: int = 0
    users_upserted: int = 0
    # Bare users created because an event named an id not seen before.
    users_created: int = 0
    events_inserted: int = 0
    duplicates_skipped: int = 0
    # Ad spend rows written: new (date, channel, campaign) keys and replaced ones.
    spend_upserted: int = 0
    rejected: list[Reject] = field(default_factory=list)
    rejected_count: int = 0
    rejects_paths: list[str] = field(default_factory=list)
    # Coupon redemptions of the ingested purchases, by outcome (redeemed, unknown...).
    coupons: dict[str, int] = field(default_factory=dict)

    @property
    def has_rejects(self) -> bool:
        return self.rejected_count > 0

    def add_reject(self, reject: Reject) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTS_IN_MEMORY:
            self.rejected.append(reject)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": [vars(f).copy() for f in self.files],
            "rows_read": self.rows_read,
            "users_upserted": self.users_upserted,
            "users_created": self.users_created,
            "events_inserted": self.events_inserted,
            "duplicates_skipped": self.duplicates_skipped,
            "spend_upserted": self.spend_upserted,
            "coupons": dict(self.coupons),
            "rejected_count": self.rejected_count,
            "rejected": [r.as_dict() for r in self.rejected],
            "rejects_paths": list(self.rejects_paths),
        }


class RejectsWriter:
    """Appends rejects as JSON lines; a file is created only when a row is rejected."""

    def __init__(self) -> None:
        self._open: dict[Path, IO[str]] = {}

    def write(self, path: Path, reject: Reject) -> None:
        handle = self._open.get(path)
        if handle is None:
            # Replaced on each run: the file describes the latest import of that input.
            handle = path.open("w", encoding="utf-8")
            self._open[path] = handle
        handle.write(json.dumps(reject.as_dict(), ensure_ascii=False) + "\n")

    @property
    def paths(self) -> list[str]:
        return [str(path) for path in self._open]

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
