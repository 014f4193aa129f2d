"""`GET /c/<token>`: record a click on a message's link, then redirect to it.

Two token forms. The links of rendered emails and SMS carry the short one (below).
`click_url` makes the general one, for links Nudge does not render (a shop's own
transactional email, say): the token (engine/serve/safety.py) signs the user, rule,
decision, channel ("email" or "sms"), the target URL and an expiry. The server
follows only a token it signed, unexpired, whose target is on an origin the project
declares for its links: the landing site (`[delivery] base_url`, whose origin is also
the shop link's) or `[serve] base_url`. A forged or tampered token is a 400 page and
an expired one a 410 page: neither ever redirects, so /c/ is no open redirect.

The short form (engine/creatives/links.py `message_link_token`) is an outbox action
id and a link name, signed. Its target is derived here from the action's creative,
rule and variant by the renderer's own `message_links`, so it is the link the message
would have carried (with a fresh landing token) and can lead nowhere else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from engine.creatives.context import build_context
from engine.creatives.errors import CreativeNotFoundError
from engine.creatives.links import read_message_link
from engine.creatives.render import creative_locale, message_links
from engine.delivery.context import params_of
from engine.serve.events import dedup_id, record_event
from engine.serve.landing import attribution, user_row
from engine.serve.safety import ClickToken, TokenError, sign_click, verify_click
from engine.store.database import Store
from engine.store.planning import OutboxAction

outbox = OutboxAction.__table__
# The surface whose links a channel's tracked links stand for (their UTM source/medium).
CHANNEL_SURFACE = {"email": "email_html", "sms": "sms"}

CHANNELS = ("email", "sms")
DEFAULT_TTL = timedelta(days=90)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def delivery_base_url(settings) -> str:
    """Where the landing site is published (`[delivery] base_url`)."""
    from engine.delivery.config import delivery_config

    return delivery_config(settings).base_url


def allowed_origins(settings) -> set[str]:
    found = {origin(delivery_base_url(settings))}
    if settings.serve.base_url:
        found.add(origin(settings.serve.base_url))
    return found


def click_url(
    server_url: str,
    secret: bytes,
    *,
    user_id: str,
    rule_id: str,
    decision_id: int | None,
    channel: str,
    target: str,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
) -> str:
    """The tracked link `<server_url>/c/<token>` of one link of one message."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
    token = ClickToken(user_id, rule_id, decision_id, channel, target, int((now + ttl).timestamp()))
    return f"{server_url.rstrip('/')}/c/{sign_click(secret, token)}"


def follow_click(
    store: Store,
    secret: bytes,
    text: str,
    *,
    origins: set[str],
    now: datetime,
    landing_secret: bytes | None = None,
) -> str:
    """The target of a valid click token, once its click is recorded; raises TokenError.

    `landing_secret` (NUDGE_SECRET_KEY) signs the landing token of a message link's
    target; without it the target carries none and opens the generic page."""
    message_link = read_message_link(secret, text)
    if message_link is not None:
        token = _message_click(store, landing_secret, *message_link, now=now)
    else:
        token = verify_click(secret, text, now=now)
    parts = urlsplit(token.url)
    if parts.scheme not in ("http", "https") or origin(token.url) not in origins:
        raise TokenError("target not on a declared origin")
    if token.channel not in CHANNELS:
        raise TokenError("unknown channel")
    record = {
        "event_id": dedup_id("click", text, now),
        "user_id": token.user_id,
        "type": f"{token.channel}_click",
        "at": now.isoformat(),
        "rule_id": token.rule_id,
        "decision_id": token.decision_id,
        "url": token.url[:2000],
    }
    record.update(attribution(dict(parse_qsl(parts.query))))
    record_event(store, record, now=now)
    return token.url


def _message_click(
    store: Store, landing_secret: bytes | None, action_id: int, link: str, expires: int, *, now
) -> ClickToken:
    """The click a message link stands for: its action's user, rule and decision, and
    the target the renderer makes for that action's creative, rule and variant."""
    if now.timestamp() >= expires:
        raise TokenError("expired", expired=True)
    columns = ("user_id", "rule_id", "decision_id", "kind", "variant", "payload")
    with store.read() as connection:
        query = sa.select(*(outbox.c[name] for name in columns)).where(outbox.c.id == action_id)
        action = connection.execute(query).first()
        user = user_row(connection, action.user_id) if action is not None else None
    if action is None or user is None or action.kind not in CHANNEL_SURFACE:
        raise TokenError("no such message")
    settings = store.settings
    creative = str(params_of(action.payload).get("creative"))
    try:
        locale = creative_locale(settings, creative, user["locale"])
    except CreativeNotFoundError:  # removed since: its links still lead to its old page
        locale = user["locale"] or settings.shop.locale
    context = build_context(
        user,
        {},
        rule_id=action.rule_id,
        variant=action.variant,
        settings=settings,
        base_url=delivery_base_url(settings),
        secret=landing_secret,
        now=now,
    )
    target = message_links(creative, CHANNEL_SURFACE[action.kind], locale, context)[link]
    return ClickToken(
        action.user_id, action.rule_id, action.decision_id, action.kind, target, expires
    )
