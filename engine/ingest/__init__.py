"""Ingest: users and events files (CSV, JSONL, stdin) -> the store, in bulk.

`ingest_files` is the one entry point; the CLI command `nudge ingest` and the demo
shop both go through it. The input formats are documented in docs/ingest.md.
"""

from engine.ingest.pipeline import BATCH_SIZE, ingest_files
from engine.ingest.report import FileReport, IngestReport, Reject

__all__ = ["BATCH_SIZE", "FileReport", "IngestReport", "Reject", "ingest_files"]
