"""SMTP sends each email's bytes made directly (engine.delivery.email_wire): they must be
exactly what `smtplib.SMTP.send_message(build_email(...))` sends, envelope included,
for any text; where that is not certain, the shortcut steps aside (None)."""

from __future__ import annotations

import copy
import random
import smtplib
from email.generator import BytesGenerator
from email.policy import compat32
from email.utils import getaddresses
from io import BytesIO

from delivery_helpers import T0
from sinks import SmtpSink

from engine.delivery.email_message import build_email, new_boundary
from engine.delivery.email_wire import wire_email

LETTERS = "abcdefghij XYZ;,.:-_<>@=?\"'()\\[]"
WIDE = LETTERS + "¥éü中文好久不见😀\t"
# Pieces of bodies: line breaks of every kind, lines starting "From " or ".", long
# words (soft line breaks), trailing spaces, "=".
PIECES = ["\n", "\r\n", "\r", "\nFrom me", "\n.", " ", "\t", "=", "x" * 90, "word", "好久不见"]


def _random_fields(rng: random.Random) -> dict:
    def text(most: int, pool: str = "") -> str:
        pool = pool or (WIDE if rng.random() < 0.3 else LETTERS)
        return "".join(rng.choice(pool) for _ in range(rng.randint(0, most)))

    def body() -> str:
        return "".join(rng.choice(PIECES) + text(12) for _ in range(rng.randint(0, 40)))

    name = rng.choice([None, "Ada Lovelace", "王小明", text(30)])
    local = rng.choice(["u1", "ada.lovelace", "x+tag", "o'neil", text(8, "ab.c+_")])
    return {
        "key": text(40) or "k",
        "to_address": f"{local or 'u'}@example.com",
        "to_name": name or None,
        "from_address": "shop@example.com",
        "from_name": rng.choice([None, "Test Shop", "店铺", text(20)]) or None,
        "reply_to": rng.choice([None, "help@example.com", text(90)]) or None,
        "subject": text(120),
        "text": body(),
        "html": rng.choice([None, body()]) or None,
        "unsubscribe_url": "https://shop.example.com/u/" + text(80).replace(" ", ""),
        "unsubscribe_mailto": rng.choice([None, "unsubscribe@example.com"]),
        "now": T0,
        "headers": {"X-Nudge-Rule": text(50), "X-Nudge-Key": text(90)},
        "boundary": new_boundary(),
    }


def _as_send_message_sends(message) -> tuple[str, list[str], bytes]:
    """The envelope and bytes smtplib's send_message derives from a Message, flattened
    with the standard library's own compat32 (not the message's quicker policy)."""
    sender = getaddresses([message["From"]])[0][1]
    recipients = [a[1] for a in getaddresses([message["To"]])]
    out = BytesIO()
    BytesGenerator(out, policy=compat32).flatten(copy.copy(message), linesep="\r\n")
    return sender, recipients, out.getvalue()


def test_wire_bytes_and_envelope_are_those_send_message_makes():
    rng = random.Random(2026)
    made = 0
    for _ in range(3000):
        fields = _random_fields(rng)
        wire = wire_email(**fields)
        if wire is None:
            continue  # not certain to match: sent with send_message instead
        made += 1
        sender, recipients, data = _as_send_message_sends(build_email(**fields))
        assert (wire.sender, list(wire.recipients)) == (sender, recipients), fields
        assert wire.data == data, fields
    assert made > 2000  # the shortcut covers the usual messages


def test_the_shortcut_steps_aside_where_it_is_not_certain():
    fields = _random_fields(random.Random(1)) | {"to_name": 'Ada "The Countess"'}
    assert wire_email(**fields) is None
    assert wire_email(**fields | {"to_name": None, "to_address": "王@example.com"}) is None
    assert wire_email(**fields | {"to_name": None, "headers": {"Bcc": "x@example.com"}}) is None
    assert wire_email(**fields | {"to_name": None, "text": ""}) is None
    assert wire_email(**fields | {"to_name": "Ada Lovelace"}) is not None


def test_a_real_server_receives_the_same_message_either_way():
    rng = random.Random(3)
    with SmtpSink() as sink, smtplib.SMTP("127.0.0.1", sink.port) as connection:
        sent = []
        while len(sent) < 60:
            fields = _random_fields(rng)
            wire = wire_email(**fields)
            if wire is None:
                continue
            connection.send_message(build_email(**fields))
            connection.sendmail(wire.sender, list(wire.recipients), wire.data)
            sent.append(fields)
    assert len(sink.envelopes) == 120
    for standard, direct in zip(sink.envelopes[::2], sink.envelopes[1::2], strict=True):
        assert standard == direct
