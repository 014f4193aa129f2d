"""The surfaces of one email share one shared-blocks module, only when it would be the
same module: a blocks template that reads a variable differing between surfaces
(`surface`, or one an edit starts to read) gets its own module per surface."""

from __future__ import annotations

import os
from email.header import decode_header, make_header

from delivery_helpers import T0, add_users, plan_with_offer

from engine.creatives import render_creative
from engine.creatives.environment import files_snapshot
from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.dispatcher import dispatch_until_idle
from tests.creatives.creative_helpers import context, project, write

BLOCKS = "{% macro where() %}[{{ WHAT }}]{% endmacro %}\n"
SURFACES = {
    "email_subject.en.txt": "Subject {{ blocks.where() }}",
    "email.en.txt": "Text {{ blocks.where() }}",
    "email.en.html": "<p>HTML {{ blocks.where() }}</p>",
}


def _subject(outgoing) -> str:
    return str(make_header(decode_header(outgoing.message["Subject"])))


def _creative(settings, reads: str) -> None:
    write(settings, "_shared/blocks.en.jinja", BLOCKS.replace("WHAT", reads))
    for name, source in SURFACES.items():
        write(settings, f"note/{name}", source)


def _render_one_message(settings) -> list[str]:
    shared: dict = {}  # as delivery passes it: one per message
    ctx = context(settings, name="Ada")
    with files_snapshot():
        return [
            render_creative(settings, "note", surface, ctx, message=shared).text
            for surface in ("email_subject", "email_text", "email_html")
        ]


def test_blocks_that_read_the_surface_see_each_surface(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    _creative(settings, "surface")
    assert _render_one_message(settings) == [
        "Subject [email_subject]",
        "Text [email_text]\n",
        "<p>HTML [email_html]</p>\n",
    ]


def test_blocks_that_do_not_read_it_give_the_same_text(tmp_path):
    settings = project(tmp_path / "shop", templates=False)
    _creative(settings, "user.first_name")
    assert _render_one_message(settings) == ["Subject [Ada]", "Text [Ada]\n", "<p>HTML [Ada]</p>\n"]


def test_a_blocks_edit_that_starts_reading_the_surface_is_used_by_the_next_batch(store):
    settings = store.settings
    _creative(settings, "user.first_name")
    add_users(store, {"id": "u1", "name": "Ada", "locale": "en"}, {"id": "u2", "locale": "en"})
    channel = NoopChannel()
    channels = ChannelSet({"email": channel})
    plan_with_offer(store, "email", "u1", {"creative": "note"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)

    blocks = settings.templates_dir / "_shared" / "blocks.en.jinja"
    blocks.write_text(BLOCKS.replace("WHAT", "surface"), encoding="utf-8")
    stat = blocks.stat()  # a later mtime, whatever the file system's granularity
    os.utime(blocks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    plan_with_offer(store, "email", "u2", {"creative": "note"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)

    first, second = (m.message for m in channel.sent)
    assert _subject(channel.sent[0]) == "Subject [Ada]"
    assert _subject(channel.sent[1]) == "Subject [email_subject]"
    texts = [part.get_payload(decode=True).decode() for part in second.get_payload()]
    assert texts == ["Text [email_text]\n", "<p>HTML [email_html]</p>\n"]
    assert first.get_payload()[0].get_payload(decode=True).decode() == "Text [Ada]\n"
