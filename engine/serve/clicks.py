"""`GET /c/<token>`: record a click on a message's link, then redirect to it.

`click_url` makes the tracked link of one message link: the token (engine/serve/
safety.py) signs the user, rule, decision, channel ("email" or "sms"), the target URL
and an expiry. The server follows only a token it signed, unexpired, whose target is
on an origin the project declares for its links: the landing site
(`[delivery] base_url`, whose origin is also the shop link's) or `[serve] base_url`.
A forged or tampered token is a 400 page and an expired one a 410 page: neither ever
redirects, so /c/ is no open redirect.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from engine.serve.events import dedup_id, record_event
from engine.serve.landing import attribution
from engine.serve.safety import ClickToken, TokenError, sign_click, verify_click
from engine.store.database import Store

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
    store: Store, secret: bytes, text: str, *, origins: set[str], now: datetime
) -> str:
    """The target of a valid click token, once its click is recorded; raises TokenError."""
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
