"""The console's HTML: sandboxed, autoescaping Jinja over the templates beside this
module, and how times are shown (the shop's zone, to the second, as `nudge status`).

Every value reaches the templates as text and is escaped there: rule ids, user names,
event fields and error messages are data, never markup. Responses are never cached.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.responses import HTMLResponse

from engine.localtime import shop_time_text
from engine.pages import page_environment

NO_STORE = {"cache-control": "no-store"}
# An instant as engine code writes it with isoformat(): date, T, time, an offset.
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)")


def local_time(value: Any, zone) -> str:
    """An instant (a datetime or its ISO text) in the shop's zone, without microseconds;
    '' for None, anything else as text."""
    if value is None:
        return ""
    if isinstance(value, str) and _ISO_INSTANT.fullmatch(value):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return shop_time_text(value, zone)
    return str(value)


def localise(data: Any, zone) -> Any:
    """`data` (dicts, lists, ISO instants as text) with every instant in the shop's zone:
    so the text renderers of the CLI can be reused as they are."""
    if isinstance(data, dict):
        return {key: localise(value, zone) for key, value in data.items()}
    if isinstance(data, list):
        return [localise(value, zone) for value in data]
    if isinstance(data, datetime) or (isinstance(data, str) and _ISO_INSTANT.fullmatch(data)):
        return local_time(data, zone)
    return data


class Pages:
    """Renders console templates for one shop (its name and zone head every page)."""

    def __init__(self, shop: str, zone_name: str):
        # What the layout reads on every page; each page overrides its own.
        self.defaults = {
            "shop": shop,
            "zone": zone_name,
            "page": None,
            "nav": True,
            "user_query": "",
        }

    def page(self, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
        environment = page_environment("engine.serve.console", keep_trailing_newline=False)
        text = environment.get_template(template).render({**self.defaults, **context})
        return HTMLResponse(text, status_code=status, headers=NO_STORE)

    def notice(
        self, status: int, title: str, message: str, *, nav: bool = True, page: str | None = None
    ) -> HTMLResponse:
        """A page with one message: refusals (without the console's links), unknown
        users, nothing to report."""
        context = {"title": title, "message": message, "nav": nav, "page": page}
        return self.page("notice.html.jinja", context, status=status)
