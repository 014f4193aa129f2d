"""Policies are middleware in a configurable order ([delivery] policies): the order
decides what an action is stopped by, and whether it used up a cap slot on the way."""

from __future__ import annotations

import pytest
from delivery_helpers import T0, add_users, outbox_rows, plan_with_offer, with_delivery

from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.config import parse_delivery_config
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.middleware import DEFAULT_ORDER, build_policies
from engine.errors import ConfigError

CAP = {"email": {"max": 1, "per": "7d"}}
# T0 is 10:00 in Shanghai: an evening-only window defers the message to 20:00.
EVENING = {"send_window": {"between": ["20:00", "22:00"]}}


def email_outcomes(store, policies=None) -> dict[str, tuple[str, str | None]]:
    """Two emails for one user under a cap of 1: the important one may only go in the
    evening, the other at any time. Their states after one pass at T0."""
    delivery = {"caps": CAP} | ({"policies": policies} if policies else {})
    store = with_delivery(store, **delivery)
    add_users(store, {"id": "u1"})
    evening = plan_with_offer(store, "email", "u1", {"creative": "winback", **EVENING}, priority=90)
    anytime = plan_with_offer(store, "email", "u1", {"creative": "winback"}, priority=10)
    channels = ChannelSet({"email": NoopChannel()})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    names = {evening: "evening", anytime: "anytime"}
    return {
        names[row["id"]]: (row["state"], row["reason"])
        for row in outbox_rows(store)
        if row["id"] in names
    }


def test_by_default_a_deferred_message_leaves_its_cap_slot_to_another(store):
    # send_window before caps: the evening email is deferred without counting, so the
    # other one takes today's slot.
    assert email_outcomes(store) == {
        "evening": ("planned", "quiet_hours"),
        "anytime": ("sent", None),
    }


def test_caps_before_the_send_window_spend_the_slot_on_the_deferred_message(store):
    # caps before send_window: the evening email (higher priority) takes the slot and is
    # then deferred anyway, so the other one is capped: nothing goes out today.
    assert email_outcomes(store, ["consent", "rule", "caps", "send_window"]) == {
        "evening": ("planned", "quiet_hours"),
        "anytime": ("skipped", "capped"),
    }


def test_the_default_order_is_documented_and_used():
    assert DEFAULT_ORDER == ("consent", "rule", "send_window", "caps")
    assert parse_delivery_config({}).policies is None
    assert [p.name for p in build_policies()] == list(DEFAULT_ORDER)


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (
            ["consent", "cpas"],
            "delivery.policies: unknown delivery policy 'cpas' (did you mean 'caps'?)",
        ),
        (["consent", "caps", "caps"], "delivery.policies: delivery policy listed twice: caps"),
        (["caps", "send_window"], "delivery.policies: the 'consent' policy cannot be left out"),
    ],
)
def test_a_bad_policy_list_is_a_config_error_naming_the_key(policies, message):
    with pytest.raises(ConfigError) as error:
        parse_delivery_config({"policies": policies})
    assert f"nudge.toml: {message}" in str(error.value)
