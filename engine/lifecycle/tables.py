"""The store tables the lifecycle reads and writes, by the names its modules use."""

from __future__ import annotations

from engine.store.people import Event, LifecycleMark, Profile, StageMembership, User

users_table = User.__table__
events_table = Event.__table__
profiles_table = Profile.__table__  # the maintained profiles (current as of the newest event)
memberships = StageMembership.__table__
marks = LifecycleMark.__table__
