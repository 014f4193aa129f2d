"""The action kind registry: built-ins, parameters, unknown and plugin kinds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from engine.actions import (
    ACTION_KINDS,
    ActionKind,
    ActionParams,
    get_action_kind,
    register_action_kind,
    unregister_action_kind,
)
from engine.errors import NudgeError


def test_builtin_kinds_and_their_default_channels():
    assert {name: kind.channel for name, kind in ACTION_KINDS.items()} == {
        "coupon": "coupon",
        "audience": "audience",
        "email": "email",
        "sms": "sms",
        "webhook": "webhook",
        "tag": "tag",
    }


@pytest.mark.parametrize("name", sorted(ACTION_KINDS))
def test_every_documented_example_validates(name):
    kind = ACTION_KINDS[name]
    assert kind.validate(kind.example).model_dump(exclude_none=True)


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(NudgeError) as error:
        get_action_kind("emial")
    assert str(error.value) == "unknown action kind 'emial' (did you mean 'email'?)"
    with pytest.raises(NudgeError, match="known kinds: audience, coupon, email"):
        get_action_kind("zzz")


def test_coupon_params():
    coupon = get_action_kind("coupon")
    params = coupon.validate({"value": 20, "min_order": "100", "expires_in": "14d"})
    assert (params.value, params.min_order, params.length) == (Decimal(20), Decimal(100), 12)
    assert coupon.validate({"percent_off": 15, "prefix": "WELCOME"}).prefix == "WELCOME"
    for bad, message in [
        ({}, "exactly one of 'value'"),
        ({"value": 5, "percent_off": 5}, "exactly one of 'value'"),
        ({"value": 0}, "greater than 0"),
        ({"percent_off": 101}, "less than or equal to 100"),
        ({"value": 5, "length": 8}, "greater than or equal to 10"),
        ({"value": 5, "expires_in": "2 weeks"}, "invalid duration '2 weeks'"),
        ({"value": 5, "prefix": "we-1"}, "should match pattern"),
        ({"value": 5, "valeu": 3}, "Extra inputs are not permitted"),
    ]:
        with pytest.raises(ValidationError, match=message):
            coupon.validate(bad)


def test_other_params():
    assert get_action_kind("audience").validate({"name": "vip"}).platforms is None
    with pytest.raises(ValidationError, match="Input should be 'google', 'meta' or 'csv'"):
        get_action_kind("audience").validate({"name": "vip", "platforms": ["tiktok"]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        get_action_kind("email").validate({"creative": "winback", "subject": "Hi"})
    with pytest.raises(ValidationError, match="should match pattern"):
        get_action_kind("sms").validate({"creative": "Win Back"})
    webhook = get_action_kind("webhook")
    assert webhook.validate({"url": "crm"}).is_endpoint_name
    assert not webhook.validate({"url": "http://127.0.0.1:8000/h"}).is_endpoint_name
    with pytest.raises(ValidationError, match="is not an http\\(s\\) URL"):
        webhook.validate({"url": "ftp://example.com/x"})
    with pytest.raises(ValidationError, match="neither an http\\(s\\) URL nor an endpoint"):
        webhook.validate({"url": "My Endpoint"})
    tag = get_action_kind("tag")
    assert tag.validate({"add": ["vip"]}).remove is None
    with pytest.raises(ValidationError, match="at least one tag"):
        tag.validate({})
    with pytest.raises(ValidationError, match="both added and removed: vip"):
        tag.validate({"add": ["vip"], "remove": ["vip"]})


def test_plugin_registration():
    class PushParams(ActionParams):
        creative: str

    kind = ActionKind(name="push", channel="push", params=PushParams, description="Push.")
    register_action_kind(kind)
    try:
        assert get_action_kind("push") is kind
        with pytest.raises(NudgeError, match="action kind 'push' is already registered"):
            register_action_kind(kind)
        with pytest.raises(NudgeError, match="action kind 'email' is already registered"):
            register_action_kind(ActionKind("email", "email", PushParams, "x"))
    finally:
        unregister_action_kind("push")
    assert "push" not in ACTION_KINDS
