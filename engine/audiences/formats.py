"""File formats of the ad platforms (docs/specs/audiences.md).

Each platform gets the identifiers of a user normalised and hashed its own way
(`identifiers_for`), and a writer that turns pages of those into files:
Google Customer Match CSV, Meta `/users` JSON batches of at most 10,000 rows with a
session, and a plain CSV for anything else.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.audiences.normalise import Rejected, normalise_and_hash
from engine.phones import InvalidPhone, to_e164

GOOGLE_HEADERS = ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
META_SCHEMA = ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
PLAIN_HEADERS = ["user_id", "email", "phone", "name", "country"]
META_BATCH = 10_000
PLATFORMS = ("google", "meta", "csv")


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """'Ada Lovelace' -> ('Ada', 'Lovelace'); a name without a space splits nothing."""
    parts = (name or "").split()
    if len(parts) < 2:
        return None, None
    return parts[0], " ".join(parts[1:])


def _field(platform: str, field: str, value: Any, **options) -> str:
    if value in (None, ""):
        return ""
    try:
        return normalise_and_hash(platform, field, str(value), **options)
    except Rejected:
        # A value the platform would reject is left out, not uploaded as a dead hash.
        return ""


def phone_of(user: Mapping[str, Any], shop_country: str) -> tuple[str, str | None]:
    """The user's number in E.164 (read in their country, else the shop's) and, when
    they have one that is left out, why: InvalidPhone.reason ("invalid", "unparseable").

    Only numbers valid in their country are exported: a wrong number's hash matches
    nobody, or someone else.
    """
    raw = user.get("phone")
    if raw in (None, "") or not str(raw).strip():
        return "", None
    try:
        return to_e164(str(raw), user.get("country"), shop_country), None
    except InvalidPhone as exc:
        return "", exc.reason


def identifiers_for(
    platform: str, user: Mapping[str, Any], shop_country: str
) -> tuple[dict[str, str], str | None]:
    """What is uploaded for one user, by column, for `platform`; and why the user's
    phone number was left out (None when it was not)."""
    phone, phone_left_out = phone_of(user, shop_country)
    if platform == "csv":
        values = {key: str(user.get(key) or "") for key in PLAIN_HEADERS if key != "user_id"}
        values["phone"] = phone
        return values, phone_left_out
    first, last = split_name(user.get("name"))
    zip_code = str((user.get("attributes") or {}).get("zip") or "").strip()
    values = {
        "email": _field(platform, "email", user.get("email")),
        "phone": _field(platform, "phone", phone),
        "first_name": _field(platform, "first_name", first),
        "last_name": _field(platform, "last_name", last),
        "country": _field(platform, "country", user.get("country")),
    }
    if platform == "google":
        address = (values["first_name"], values["last_name"], values["country"], zip_code)
        if not all(address):  # Google matches an address only with all four parts
            values.update(first_name="", last_name="", country="")
            zip_code = ""
        values["zip"] = zip_code
    return values, phone_left_out


def has_identifier(values: Mapping[str, str]) -> bool:
    return bool(values.get("email") or values.get("phone"))


class AudienceWriter:
    """Writes one file set (an add or a remove list) for one platform, page by page."""

    def __init__(self, platform: str, base: Path, *, estimated_total: int, session_seed: str):
        self.platform, self.base = platform, base
        self.files: list[Path] = []
        self.count = 0
        self._estimated = estimated_total
        self._session = int.from_bytes(hashlib.sha256(session_seed.encode()).digest()[:7], "big")
        self._meta_rows: list[list[str]] = []
        self._csv = None
        self._handle = None

    def write(self, pages: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        for user_id, values in pages:
            self.count += 1
            if self.platform == "meta":
                self._meta_rows.append([values.get(k, "") for k in META_KEYS])
                if len(self._meta_rows) == META_BATCH:
                    self._flush_meta(last=False)
            else:
                self._csv_writer().writerow(self._csv_row(user_id, values))

    def _csv_row(self, user_id: str, values: Mapping[str, str]) -> list[str]:
        if self.platform == "google":
            return [values.get(k, "") for k in GOOGLE_KEYS]
        return [user_id, *(values.get(k, "") for k in PLAIN_HEADERS[1:])]

    def _csv_writer(self):
        if self._csv is None:
            path = self.base.parent / f"{self.base.name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._handle, lineterminator="\n")
            self._csv.writerow(GOOGLE_HEADERS if self.platform == "google" else PLAIN_HEADERS)
            self.files.append(path)
        return self._csv

    def _flush_meta(self, *, last: bool) -> None:
        sequence = len(self.files) + 1
        path = self.base.parent / f"{self.base.name}.{sequence:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "payload": {"schema": META_SCHEMA, "data": self._meta_rows},
            "session": {
                "session_id": self._session,
                "batch_seq": sequence,
                "last_batch_flag": last,
                "estimated_num_total": self._estimated,
            },
        }
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        self.files.append(path)
        self._meta_rows = []

    def close(self) -> list[Path]:
        if self.platform == "meta":
            if self._meta_rows or not self.files:
                self._flush_meta(last=True)
            else:  # the last full batch was already written: mark it last
                last = self.files[-1]
                document = json.loads(last.read_text(encoding="utf-8"))
                document["session"]["last_batch_flag"] = True
                last.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        elif self._csv is None:
            self._csv_writer()  # an empty list is still a file with its header
        if self._handle is not None:
            self._handle.close()
        return self.files


GOOGLE_KEYS = ["email", "phone", "first_name", "last_name", "country", "zip"]
META_KEYS = ["email", "phone", "first_name", "last_name", "country"]
