"""Readers: a file or stdin -> a stream of records with their line numbers.

Files are read as bytes, one line at a time, so memory stays flat whatever the file
size, and a line that is not valid UTF-8 is a reject of that line rather than a
crash of the whole import. The format comes from the extension (.csv, .jsonl,
.ndjson); stdin and unknown extensions are sniffed: a first non-blank `{` is JSONL.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from engine.errors import IngestError

STDIN = "-"
CSV_SUFFIXES = {".csv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
# How far to look for a first valid JSON object when guessing users vs events.
_SNIFF_LINES = 1000


class Record(NamedTuple):
    """One input record: its data, or the reason it could not be read.

    A named tuple: made once per input line, it is built in a third of a frozen
    dataclass's time."""

    line: int
    # The input text; JSONL keeps the undecoded bytes until a reject needs them.
    raw: str | bytes
    data: dict[str, Any] | None = None
    error: str | None = None


class Source:
    """An opened input: its display name, format, and (once sniffed) its columns."""

    def __init__(self, name: str, path: Path | None, stream: IO[bytes]):
        self.name = name
        self.path = path
        self._stream = stream
        self._head: list[bytes] = []
        self.format = self._detect_format()
        self.header: list[str] | None = None
        self._csv_lines: Iterator[bytes] | None = None
        if self.format == "csv":
            self._read_header()

    # -- format and kind

    def _detect_format(self) -> str:
        suffix = self.path.suffix.lower() if self.path is not None else ""
        if suffix in CSV_SUFFIXES:
            return "csv"
        if suffix in JSONL_SUFFIXES:
            return "jsonl"
        first = self._peek_nonblank()
        return "jsonl" if first is not None and first.lstrip().startswith(b"{") else "csv"

    def _peek_nonblank(self) -> bytes | None:
        for line in self._stream:
            self._head.append(line)
            if line.strip():
                return line.lstrip(b"\xef\xbb\xbf")
        return None

    def keys(self) -> set[str] | None:
        """The column names (CSV) or the keys of the first JSON object; None if empty."""
        if self.format == "csv":
            return set(self.header) if self.header is not None else None
        for line in self._head:
            found = _json_keys(line)
            if found is not None:
                return found
        for _ in range(_SNIFF_LINES):
            line = self._stream.readline()
            if not line:
                return None
            self._head.append(line)
            found = _json_keys(line)
            if found is not None:
                return found
        return None

    # -- records

    def records(self) -> Iterator[Record]:
        if self.format == "csv":
            return self._csv_records()
        return self._jsonl_records()

    def _lines(self) -> Iterator[bytes]:
        head, self._head = self._head, []
        return chain(head, self._stream)

    def _jsonl_records(self) -> Iterator[Record]:
        # orjson parses bytes directly (and rejects invalid UTF-8 itself): several
        # times faster than the json module, which matters at a million lines.
        loads = orjson.loads
        for number, line in enumerate(self._lines(), start=1):
            if number == 1:
                line = line.lstrip(b"\xef\xbb\xbf")
            stripped = line.strip()
            if not stripped:
                continue
            try:
                data = loads(stripped)
            except orjson.JSONDecodeError as exc:
                yield Record(number, _decode(stripped), error=f"malformed JSON: {_json_error(exc)}")
                continue
            if not isinstance(data, dict):
                kind = type(data).__name__
                yield Record(number, _decode(stripped), error=f"expected a JSON object, got {kind}")
                continue
            yield Record(number, stripped, data)

    def _read_header(self) -> None:
        # The csv module reads text; each line is decoded with surrogateescape so that
        # invalid bytes survive to be detected per record instead of aborting the file.
        self._consumed = 0
        self._pending: list[str] = []
        self._reader = csv.reader(self._text_lines())
        try:
            while True:
                header = next(self._reader)
                if header:
                    break
        except StopIteration:
            return
        except csv.Error as exc:
            raise IngestError(f"{self.name}: cannot read the CSV header: {exc}") from None
        names = [name.strip().lstrip("\ufeff") for name in header]
        if any(not name for name in names):
            raise IngestError(f"{self.name}: the CSV header has an empty column name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise IngestError(f"{self.name}: duplicate CSV columns: {', '.join(duplicates)}")
        self.header = names
        self._pending.clear()

    def _text_lines(self) -> Iterator[str]:
        for line in self._lines():
            self._consumed += 1
            text = line.decode("utf-8", "surrogateescape")
            self._pending.append(text)
            yield text

    def _csv_records(self) -> Iterator[Record]:
        if self.header is None:
            return
        header = self.header
        width = len(header)
        while True:
            start = self._consumed + 1
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raw = "".join(self._pending).rstrip("\r\n")
                self._pending.clear()
                yield Record(start, _clean(raw), error=f"malformed CSV: {exc}")
                continue
            raw = "".join(self._pending).rstrip("\r\n")
            self._pending.clear()
            if not row or (len(row) == 1 and not row[0].strip() and width > 1):
                continue  # a blank line
            if not _is_utf8(raw):
                yield Record(start, _clean(raw), error="line is not valid UTF-8")
                continue
            if len(row) != width:
                yield Record(start, raw, error=f"expected {width} columns, found {len(row)}")
                continue
            yield Record(start, raw, dict(zip(header, row, strict=True)))

    def close(self) -> None:
        if self.path is not None:
            self._stream.close()


def open_source(name: str | Path, stdin: IO[bytes] | None = None) -> Source:
    """Open a path, or stdin for "-"; an unreadable file is an IngestError naming it."""
    if str(name) == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        return Source("stdin", None, stream)
    path = Path(name)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        stream.close()
        raise IngestError(f"cannot read {path}: it is a directory")
    try:
        return Source(str(path), path, stream)
    except BaseException:
        stream.close()
        raise


def raw_text(record: Record) -> str:
    raw = record.raw
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _json_error(exc: orjson.JSONDecodeError) -> str:
    if "UTF-8" in exc.msg:
        return "line is not valid UTF-8"
    return f"{exc.msg} at column {exc.colno}"


def _json_keys(line: bytes) -> set[str] | None:
    try:
        data = orjson.loads(line.strip().lstrip(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        return None
    return set(data) if isinstance(data, dict) else None


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def iter_sources(names: Iterable[str | Path]) -> list[Source]:
    """Open every input up front, so an unreadable file fails before anything is written."""
    opened: list[Source] = []
    try:
        for name in names:
            opened.append(open_source(name))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened
