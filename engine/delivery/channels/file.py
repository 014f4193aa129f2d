"""File backends: one file per message in a folder (development, demos, audits).

Like Django's file e-mail backend, but the file is named after the idempotency key,
so re-delivering an action after a crash rewrites the same file instead of adding a
second one: the folder holds exactly one file per delivered action.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.delivery.channels import OutgoingEmail, OutgoingJson
from engine.delivery.channels.signing import webhook_headers


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _write_atomically(path: Path, data: bytes) -> None:
    # A reader (or a crash) never sees half a message: write aside, then rename.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class FileEmailChannel:
    """Writes `<folder>/<key>.eml`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def send(self, message: OutgoingEmail) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            self.folder / f"{_safe_name(message.key)}.eml", message.message.as_bytes()
        )

    def close(self) -> None:
        pass


class FileJsonChannel:
    """Writes `<folder>/<key>.json`: the URL, the signed headers and the body."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def send(self, message: OutgoingJson) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps(message.body, ensure_ascii=False, sort_keys=True)
        document = {
            "url": message.url,
            "headers": webhook_headers(message.key, message.timestamp, body, message.secret),
            "body": message.body,
        }
        data = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode()
        _write_atomically(self.folder / f"{_safe_name(message.key)}.json", data + b"\n")

    def close(self) -> None:
        pass
