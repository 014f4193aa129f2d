"""`webhook`: POST a signed JSON event to a URL (Standard Webhooks headers).

```yaml
actions:
  webhook: {url: crm}                      # an endpoint in nudge.toml [delivery.webhooks.crm]
  webhook: {url: "https://example.com/hook", body: {segment: vip}}
```
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import field_validator

from engine.action_kinds import SLUG_PATTERN, ActionKind, ActionParams, Slug


class WebhookParams(ActionParams):
    url: str
    """An http(s) URL, or the name of an endpoint in nudge.toml [delivery.webhooks.NAME]."""
    creative: Slug | None = None
    """Optional creative whose `webhook` surface renders the body."""
    body: dict[str, Any] | None = None
    """Extra JSON fields merged into the event body."""

    @field_validator("url")
    @classmethod
    def _url_or_endpoint(cls, value: str) -> str:

        if "://" in value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL")
            return value
        if not re.match(SLUG_PATTERN, value):
            raise ValueError(
                f"{value!r} is neither an http(s) URL nor an endpoint name "
                "(lowercase words joined by - or _, configured in [delivery.webhooks.NAME])"
            )
        return value

    @property
    def is_endpoint_name(self) -> bool:
        return "://" not in self.url


def deliver(ctx, actions):
    """POST each event to its URL or named endpoint, signed (Standard Webhooks)."""
    import os

    from engine.actions.delivering import base_event, in_order, parse_params, send_each
    from engine.delivery.channels import OutgoingJson
    from engine.delivery.context import Outcome

    good, bad = parse_params(actions, WebhookParams)
    secrets: dict[str, str | None] = {}  # read once per batch, not once per request

    def secret_of(name: str) -> str | None:
        if name not in secrets:
            secrets[name] = os.environ.get(name)
        return secrets[name]

    def build(action, params):
        url, secret_env = params.url, ctx.config.webhook.secret_env
        if params.is_endpoint_name:
            endpoint = ctx.config.webhooks.get(params.url)
            if endpoint is None:
                return Outcome.dead(
                    "no_endpoint", f"no endpoint {params.url!r} in nudge.toml [delivery.webhooks]"
                )
            url, secret_env = endpoint.url, endpoint.secret_env or secret_env
        body = base_event(ctx, action, "nudge.webhook")
        body["data"].update(params.body or {})
        if params.creative:
            body["data"]["creative"] = params.creative
        return OutgoingJson(action.idempotency_key, url, body, ctx.now, secret_of(secret_env))

    return in_order(actions, bad, send_each(ctx, good, build))


KIND = ActionKind(
    name="webhook",
    channel="webhook",
    params=WebhookParams,
    description="POST a signed JSON event (Standard Webhooks) to a URL or named endpoint.",
    example={"url": "https://example.com/hooks/nudge", "body": {"segment": "vip"}},
    deliver=deliver,
)
