"""`email`: send the email surface of a creative (subject, HTML and text).

```yaml
actions:
  email: {creative: winback}
```
The subject comes from the creative, so every surface of an offer stays consistent.
Needs email consent and no unsubscribe, re-checked at send time.
"""

from __future__ import annotations

from engine.action_kinds import EMAIL_SURFACES as SURFACES
from engine.action_kinds import ActionKind, ActionParams, Slug


class EmailParams(ActionParams):
    creative: Slug
    """Folder name under templates/."""


def deliver(ctx, actions):
    """Render and send each email through the `email` channel (SMTP or .eml files)."""
    from engine.actions.delivering import in_order, parse_params, send_each
    from engine.delivery.channels import OutgoingEmail
    from engine.delivery.context import Outcome
    from engine.delivery.contexts import coupons_for
    from engine.delivery.email_message import build_email, new_boundary
    from engine.delivery.email_wire import wire_email
    from engine.delivery.render import render_surfaces
    from engine.delivery.unsubscribe import ensure_tokens

    config = ctx.config.email
    good, bad = parse_params(actions, EmailParams)
    addressed = [(a, p) for a, p in good if ctx.contacts[a.user_id].email]
    skipped = {
        a.id: Outcome.skipped("no_email") for a, _ in good if not ctx.contacts[a.user_id].email
    }
    coupons = coupons_for(ctx, [a for a, _ in addressed])
    with ctx.store.begin() as connection:
        tokens = ensure_tokens(connection, [a.user_id for a, _ in addressed], ctx.now)

    def build(action, params):
        contact = ctx.contacts[action.user_id]
        url = config.unsubscribe_url.format(token=tokens[action.user_id])
        texts = render_surfaces(
            ctx,
            action,
            contact,
            params.creative,
            SURFACES,
            coupon=coupons.get(action.decision_id),
            extra={"unsubscribe_url": url},
        )
        if isinstance(texts, Outcome):
            return texts
        fields = {
            "key": action.idempotency_key,
            "to_address": contact.email,
            "to_name": contact.name,
            "from_address": config.from_address,
            "from_name": config.from_name or ctx.settings.shop.name,
            "reply_to": config.reply_to,
            "subject": texts["email_subject"],
            "text": texts["email_text"],
            "html": texts["email_html"],
            "unsubscribe_url": url,
            "unsubscribe_mailto": config.unsubscribe_mailto,
            "now": ctx.now,
            "headers": {"X-Nudge-Rule": action.rule_id, "X-Nudge-Key": action.idempotency_key},
            # One boundary for both forms, so that they are the same message.
            "boundary": new_boundary(),
        }
        # The Message is built only if a channel reads it (files, tests); SMTP sends
        # the same bytes made directly (engine.delivery.email_wire).
        return OutgoingEmail(
            action.idempotency_key,
            build=lambda: build_email(**fields),
            build_wire=lambda: wire_email(**fields),
        )

    return in_order(actions, bad, skipped, send_each(ctx, addressed, build))


KIND = ActionKind(
    name="email",
    channel="email",
    consent="email",
    params=EmailParams,
    description="Send the creative's email (subject, HTML and text) to the user.",
    example={"creative": "winback"},
    deliver=deliver,
)
