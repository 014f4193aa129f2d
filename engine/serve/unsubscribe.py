"""`GET /u/<token>` (a confirmation page) and `POST /u/<token>` (RFC 8058 one-click).

The token is the user's random unsubscribe token (engine/delivery/unsubscribe.py),
the one in the List-Unsubscribe header. The POST unsubscribes at once, with or
without the `List-Unsubscribe=One-Click` body a mail provider sends, needs no cookie
and answers 200 (no redirect). The dispatcher re-checks consent before each
sub-batch, so the user's planned emails not yet sent are skipped.
"""

from __future__ import annotations

import html
from datetime import datetime

import sqlalchemy as sa

from engine.delivery.unsubscribe import token_matches, tokens, unsubscribe
from engine.errors import NotFoundError
from engine.serve.safety import page
from engine.store.database import Store
from engine.store.people import User

users = User.__table__

TEXTS = {
    "en": {
        "confirm_title": "Unsubscribe from our emails?",
        "confirm_text": "You will no longer receive marketing emails from {shop}.",
        "button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done_text": "You will no longer receive marketing emails from {shop}.",
    },
    "zh": {
        "confirm_title": "退订我们的邮件？",
        "confirm_text": "退订后，您将不再收到{shop}的营销邮件。",
        "button": "退订",
        "done_title": "您已退订",
        "done_text": "您将不再收到{shop}的营销邮件。",
    },
}


def texts_for(locale: str | None) -> tuple[str, dict[str, str]]:
    language = (locale or "").split("-")[0].lower()
    return (locale or "en", TEXTS[language]) if language in TEXTS else ("en", TEXTS["en"])


def user_locale(store: Store, token: str) -> tuple[bool, str | None]:
    """(whether the token exists, the locale of its user or the shop's)."""
    query = (
        sa.select(users.c.locale)
        .select_from(tokens.outerjoin(users, users.c.id == tokens.c.user_id))
        .where(token_matches(token))
    )
    with store.read() as connection:
        row = connection.execute(query).first()
    if row is None:
        return False, None
    return True, row.locale or store.settings.shop.locale


def confirmation_page(store: Store, locale: str | None):
    lang, words = texts_for(locale)
    shop = store.settings.shop.name
    body = (
        f"<p>{html.escape(words['confirm_text'].format(shop=shop))}</p>\n"
        # No action: the form posts to this very URL (whatever prefix a proxy adds).
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">{html.escape(words["button"])}</button></form>'
    )
    return page(words["confirm_title"], body, lang=lang)


def unsubscribe_now(store: Store, token: str, *, now: datetime):
    """Unsubscribe the token's user; the done page, or None for an unknown token."""
    try:
        unsubscribe(store, token, now=now)
    except NotFoundError:
        return None
    _, locale = user_locale(store, token)
    lang, words = texts_for(locale)
    text = words["done_text"].format(shop=store.settings.shop.name)
    return page(words["done_title"], f"<p>{html.escape(text)}</p>", lang=lang)
