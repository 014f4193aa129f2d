"""Every table, imported in one place so that metadata and migrations see them all."""

from sqlmodel import SQLModel

from engine.store.people import Event, Profile, StageMembership, User, UserTag
from engine.store.planning import Decision, OutboxAction, Run

metadata = SQLModel.metadata

__all__ = [
    "Decision",
    "Event",
    "OutboxAction",
    "Profile",
    "Run",
    "StageMembership",
    "User",
    "UserTag",
    "metadata",
]
