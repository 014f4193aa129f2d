"""What makes dispatch fast must not change what it does.

- creatives and templates are looked up once per sub-batch: an edit is used by the next;
- the rule files are compiled again only when one changed: an edit is used by the next
  batch;
- channels with `concurrency` (an SMTP pool, an HTTP client) send several messages at
  once: each is still sent once, failures are retried, a stop releases what was not
  handed to the channel;
- emails are flattened to the same bytes as with the standard library's compat32.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
from datetime import UTC, datetime, timedelta
from email.generator import BytesGenerator
from email.header import Header, decode_header, make_header
from email.policy import compat32
from io import BytesIO

from delivery_helpers import (
    REPO_TEMPLATES,
    T0,
    add_users,
    outbox_rows,
    plan,
    plan_with_offer,
    smtp_store,
    with_delivery,
)
from sinks import HttpSink, SmtpSink

from engine.creatives import loader
from engine.creatives.environment import files_snapshot
from engine.delivery.channels import ChannelSet, NoopChannel, build_channels
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.email_message import _UTF8_WORDS, QUICK_FOLDING, build_email
from engine.delivery.rule_policy import rule_files_ruleset
from tests.planning.helpers import write_rule


def _subject(message) -> str:
    return str(make_header(decode_header(message.message["Subject"])))


def _with_templates(store, folder):
    rules = store.settings.rules.model_copy(update={"templates": str(folder)})
    from engine.store import Store

    return Store(engine=store.engine, settings=store.settings.model_copy(update={"rules": rules}))


def _touch_later(path) -> None:
    # Jinja reloads a template whose mtime changed; make sure it did, whatever the
    # file system's timestamp granularity.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_a_template_edit_is_used_by_the_next_batch(store, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, templates)
    store = _with_templates(store, templates)
    add_users(store, {"id": "u1", "name": "Ada", "locale": "en"}, {"id": "u2", "locale": "en"})
    channel = NoopChannel()
    channels = ChannelSet({"email": channel})
    plan_with_offer(store, "email", "u1", {"creative": "winback"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)

    subject = templates / "winback" / "email_subject.en.txt"
    subject.write_text("Edited: {{ blocks.discount() }} for you\n", encoding="utf-8")
    _touch_later(subject)
    plan_with_offer(store, "email", "u2", {"creative": "winback"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)

    subjects = [_subject(m) for m in channel.sent]
    assert subjects[0].startswith("Ada, we miss you")
    assert subjects[1].startswith("Edited: ")


def test_creative_folders_are_listed_once_per_snapshot(settings, monkeypatch):
    settings = settings.model_copy(
        update={"rules": settings.rules.model_copy(update={"templates": str(REPO_TEMPLATES)})}
    )
    listed = []
    read = loader._read_creative
    monkeypatch.setattr(loader, "_read_creative", lambda s, n: listed.append(n) or read(s, n))
    with files_snapshot():
        first = loader.open_creative(settings, "winback")
        assert loader.open_creative(settings, "winback") is first
    assert listed == ["winback"]
    loader.open_creative(settings, "winback")  # outside a snapshot: listed again
    assert listed == ["winback", "winback"]


FLIGHT = """\
trigger: {stage: first_purchase}
flight: {end: 2026-11-25}
actions:
  tag: {add: [thanked]}
"""


def test_rule_files_are_compiled_again_only_when_one_changed(settings):
    write_rule(settings, "thanks", FLIGHT)
    first = rule_files_ruleset(settings)
    assert rule_files_ruleset(settings) is first
    # Same size, same second: only the content tells the edit apart.
    write_rule(settings, "thanks", FLIGHT.replace("2026-11-25", "2026-11-19"))
    second = rule_files_ruleset(settings)
    assert second is not first
    assert second.rules["thanks"].spec.flight_end < first.rules["thanks"].spec.flight_end
    write_rule(settings, "other", FLIGHT)
    assert set(rule_files_ruleset(settings).rules) == {"thanks", "other"}


def test_a_rule_edit_is_used_by_the_next_batch(store):
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    write_rule(store.settings, "thanks", FLIGHT)
    add_users(store, {"id": "u1"}, {"id": "u2"})
    channels = ChannelSet({})
    plan(store, "tag", "u1", {"add": ["thanked"]}, rule_id="thanks", at=at)
    first = dispatch_until_idle(store, now=at, worker_id="w", channels=channels)
    # The flight now ended before `at`: the next batch skips the rule's actions.
    write_rule(store.settings, "thanks", FLIGHT.replace("2026-11-25", "2026-11-19"))
    plan(store, "tag", "u2", {"add": ["thanked"]}, rule_id="thanks", at=at)
    second = dispatch_until_idle(store, now=at, worker_id="w", channels=channels)
    assert first.outcomes == {"sent": 1}
    assert second.reasons == {"flight_over": 1}


def test_a_pool_sends_each_email_once_and_records_refusals(store):
    with SmtpSink(refuse={"u3@example.com"}) as sink:
        store = smtp_store(store, sink, {"connections": 3})
        add_users(store, *({"id": f"u{i}", "locale": "en"} for i in range(12)))
        for i in range(12):
            plan_with_offer(store, "email", f"u{i}", {"creative": "winback"})
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            assert channels.get("email").concurrency == 3
            assert 1 <= channels.get("email").connections_opened <= 3
    assert report.outcomes == {"sent": 12 + 11, "dead": 1}
    assert report.reasons == {"rejected": 1}
    ids = [m["Message-ID"] for m in sink.messages]
    assert len(ids) == len(set(ids)) == 11
    emails = {r["user_id"]: r["state"] for r in outbox_rows(store) if r["kind"] == "email"}
    assert emails == {f"u{i}": "dead" if i == 3 else "sent" for i in range(12)}


def test_concurrent_webhooks_are_retried_and_never_sent_twice(store):
    with HttpSink(fail_first=2) as sink:
        store = with_delivery(store, webhook={"backend": "http", "concurrency": 3})
        add_users(store, *({"id": f"u{i}"} for i in range(6)))
        for i in range(6):
            plan(store, "webhook", f"u{i}", {"url": f"{sink.url}/hook"})
        with build_channels(store.settings) as channels:
            first = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            later = T0 + timedelta(days=1)
            second = dispatch_until_idle(store, now=later, worker_id="w", channels=channels)
    assert first.outcomes == {"sent": 4, "retry": 2}
    assert second.outcomes == {"sent": 2}
    assert len(sink.accepted) == 6 and sink.duplicates == 0


def test_a_stop_lets_sends_in_flight_finish_and_releases_the_rest(store):
    stop = threading.Event()
    with SmtpSink(on_message=lambda number, _m: number == 2 and stop.set()) as sink:
        store = smtp_store(store, sink, {"connections": 2})
        add_users(store, *({"id": f"u{i}", "locale": "en"} for i in range(10)))
        for i in range(10):
            plan_with_offer(store, "email", f"u{i}", {"creative": "winback"}, priority=-1)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(
                store, now=T0, worker_id="w", channels=channels, batch_size=20, stop=stop
            )
    sent = report.outcomes["sent"] - 10  # the coupons, delivered before the emails
    # The one that stopped it and those already handed to a connection (how many
    # depends on the threads' timing); never the rest.
    assert 2 <= sent < 10
    assert report.outcomes == {"sent": 10 + sent, "released": 10 - sent}
    assert len(sink.messages) == sent
    states = sorted(r["state"] for r in outbox_rows(store) if r["kind"] == "email")
    assert states == ["planned"] * (10 - sent) + ["sent"] * sent


def _flat(message, policy) -> bytes:
    out = BytesIO()
    BytesGenerator(out, policy=policy.clone(linesep="\r\n")).flatten(message)
    return out.getvalue()


def test_emails_flatten_to_the_bytes_compat32_gives():
    rng = random.Random(12)
    letters = "abcdefghij XYZ;,.:-_<>@=?\"'()"
    wide = letters + "¥éü中文好久不见😀\t"

    def text(most: int) -> str:
        pool = wide if rng.random() < 0.3 else letters
        return "".join(rng.choice(pool) for _ in range(rng.randint(0, most)))

    for _ in range(500):
        message = build_email(
            key=text(40) or "k",
            to_address="u1@example.com",
            to_name=text(30) or None,
            from_address="shop@example.com",
            from_name=text(20) or None,
            reply_to=None,
            subject=text(120),
            text=text(200) or "x",
            html=text(200) or None,
            unsubscribe_url="https://shop.example.com/u/" + text(60).replace(" ", ""),
            unsubscribe_mailto=None,
            now=T0,
            headers={"X-Nudge-Rule": text(50), "X-Nudge-Key": text(90)},
        )
        assert _flat(message, QUICK_FOLDING) == _flat(message, compat32)
        for length in (0, 40):  # a generator's own line length is honoured too
            narrow = {"max_line_length": length}
            quick, standard = QUICK_FOLDING.clone(**narrow), compat32.clone(**narrow)
            assert _flat(message, quick) == _flat(message, standard)


def test_subjects_are_encoded_as_the_standard_library_encodes_them():
    rng = random.Random(7)
    pool = "abc XYZ,;:=?_-.¥éü中文好久不见😀\t"
    for _ in range(2000):
        subject = "".join(rng.choice(pool) for _ in range(rng.randint(0, 150)))
        for width in (40, 76, 78):
            expected = Header(subject, "utf-8").encode(maxlinelen=width)
            assert Header(subject, _UTF8_WORDS).encode(maxlinelen=width) == expected
