"""Every table, imported in one place so that metadata and migrations see them all."""

from sqlmodel import SQLModel

from engine.store.delivery import (
    AudienceMember,
    AudienceSync,
    AudienceSyncedMember,
    Coupon,
    CouponCode,
    CouponRedemption,
    DeliveryAttempt,
    UnsubscribeToken,
)
from engine.store.marketing import AdSpend
from engine.store.people import (
    Event,
    LifecycleMark,
    Profile,
    StageMembership,
    User,
    UserTag,
)
from engine.store.planning import (
    ChangeCounter,
    DaemonProcess,
    Decision,
    Installation,
    OutboxAction,
    Run,
)

metadata = SQLModel.metadata

__all__ = [
    "AdSpend",
    "AudienceMember",
    "AudienceSync",
    "AudienceSyncedMember",
    "ChangeCounter",
    "Coupon",
    "CouponCode",
    "CouponRedemption",
    "DaemonProcess",
    "Decision",
    "DeliveryAttempt",
    "Event",
    "Installation",
    "LifecycleMark",
    "OutboxAction",
    "Profile",
    "Run",
    "StageMembership",
    "UnsubscribeToken",
    "User",
    "UserTag",
    "metadata",
]
