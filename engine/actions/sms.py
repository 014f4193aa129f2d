"""`sms`: send the SMS surface of a creative through the configured SMS gateway.

```yaml
actions:
  sms: {creative: winback}
```
Needs SMS consent, re-checked at send time. The number is read like an audience
export reads it (engine/phones.py): in the user's country, else the shop's; a number
that is not valid there is skipped with reason `invalid_phone`, never sent.
"""

from __future__ import annotations

from engine.action_kinds import ActionKind, ActionParams, Slug


class SmsParams(ActionParams):
    creative: Slug
    """Folder name under templates/."""


def deliver(ctx, actions):
    """POST each text to the SMS gateway (or write it to a folder): JSON, signed."""
    import os

    from engine.actions.delivering import base_event, in_order, parse_params, send_each
    from engine.delivery.channels import OutgoingJson
    from engine.delivery.context import Outcome
    from engine.delivery.contexts import coupons_for
    from engine.delivery.render import render_surfaces
    from engine.phones import InvalidPhone, to_e164

    config = ctx.config.sms
    good, bad = parse_params(actions, SmsParams)
    coupons = coupons_for(ctx, [a for a, _ in good])
    secret = os.environ.get(config.secret_env)

    def build(action, params):
        contact = ctx.contacts[action.user_id]
        if not contact.phone:
            return Outcome.skipped("no_phone")
        try:
            phone = to_e164(contact.phone, contact.country, ctx.settings.shop.country)
        except InvalidPhone as exc:
            # A guessed number reaches someone else or no one: skip, and keep why (the
            # row's last_error, with the number) so that it can be found and fixed.
            return Outcome("skipped", reason="invalid_phone", error=str(exc))
        texts = render_surfaces(
            ctx, action, contact, params.creative, ("sms",), coupon=coupons.get(action.decision_id)
        )
        if isinstance(texts, Outcome):
            return texts
        text = texts["sms"]
        body = base_event(ctx, action, "nudge.sms")
        body["data"].update(to=phone, text=text, creative=params.creative)
        return OutgoingJson(action.idempotency_key, config.url or "", body, ctx.now, secret)

    return in_order(actions, bad, send_each(ctx, good, build))


KIND = ActionKind(
    name="sms",
    channel="sms",
    consent="sms",
    params=SmsParams,
    description="Send the creative's SMS text to the user's phone.",
    example={"creative": "winback"},
    deliver=deliver,
)
