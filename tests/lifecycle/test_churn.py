"""`churned` means inactive: no event of any kind (and no signup) for churned_days.

Each stage is checked on both paths: the maintained profiles (T at or after the newest
event) and profiles derived from events as of T (a newer event exists).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from lifecycle_data import add_events, add_users

from engine.lifecycle import refresh_stages, stage_history, stages_as_of
from engine.store.people import LifecycleMark, StageMembership, User
from tests.planning.helpers import ingest

T = datetime(2026, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


def stages_at(store, as_of: datetime) -> dict[str, str | None]:
    with store.connect() as connection:
        return dict(connection.execute(stages_as_of(connection, store.settings, as_of)).all())


def on_both_paths(store, as_of: datetime) -> dict[str, str | None]:
    """The stages at `as_of` from the maintained profiles, then derived from events.

    A visit one day after `as_of` by an extra user makes `as_of` older than the newest
    event, so the second reading derives every profile from the events up to `as_of`.
    Both readings must agree.
    """
    maintained = stages_at(store, as_of)
    with store.begin() as connection:
        add_users(connection, as_of, {"id": "zz-later"})
        add_events(connection, as_of, ("zz-later", "visit", as_of + DAY))
    derived = stages_at(store, as_of)
    assert derived.pop("zz-later") is None
    assert derived == maintained
    return maintained


def refresh(store, now: datetime):
    with store.begin() as connection:
        return refresh_stages(connection, store.settings, now)


def open_stages(store) -> dict[str, str]:
    m = StageMembership.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(m.c.user_id, m.c.stage).where(m.c.exited_at.is_(None)))
        return dict(rows.all())


def history(store, user_id: str) -> list[tuple]:
    with store.connect() as connection:
        return [
            (r["stage"], r["entered_at"], r["exited_at"])
            for r in stage_history(connection, user_id)
        ]


def test_member_of_two_years_who_visited_five_hours_ago_is_not_churned(store):
    with store.begin() as connection:
        add_users(
            connection,
            T,
            {"id": "crm", "member_since": T - 730 * DAY},  # from a CRM: no signup event
            {"id": "signed"},
        )
        add_events(
            connection,
            T,
            ("crm", "visit", T - 5 * HOUR),
            ("signed", "signup", T - 730 * DAY),
            ("signed", "visit", T - 5 * HOUR),
        )
    # Never bought and active today: still a registered member, neither churned nor
    # lapsed (lapsing is about purchases, or about inactivity for members who never bought).
    assert on_both_paths(store, T) == {"crm": "registered", "signed": "registered"}
    refresh(store, T)
    assert open_stages(store) == {"crm": "registered", "signed": "registered"}


def test_no_activity_for_400_days_is_churned_whatever_the_user_did_before(store):
    gone = T - 400 * DAY
    with store.begin() as connection:
        add_users(
            connection,
            T,
            {"id": "vip", "member_tier": "platinum", "member_since": gone - 30 * DAY},
            {"id": "buyer"},
            {"id": "member", "member_since": gone},
            {"id": "visitor"},
            {"id": "comeback"},
            {"id": "reader", "member_since": T - 500 * DAY},
        )
        add_events(
            connection,
            T,
            ("vip", "purchase", gone - 20 * DAY, 6000),
            ("vip", "visit", gone),
            ("buyer", "purchase", gone, 80),
            ("visitor", "visit", gone),
            ("comeback", "purchase", gone, 80),
            ("comeback", "visit", T - 10 * DAY),
            ("reader", "email_open", T - 20 * DAY),
        )
    assert on_both_paths(store, T) == {
        "vip": "churned",
        "buyer": "churned",
        "member": "churned",
        "visitor": "churned",  # an anonymous visitor gone for a year is not a prospect
        # Active within the year: not churned. Its purchase is 400 days old: lapsed.
        "comeback": "lapsed_member",
        # Any event counts as activity, an email open too.
        "reader": "registered",
    }


def test_churned_exactly_one_second_after_churned_days_of_inactivity(store):
    last = T - 200 * DAY
    with store.begin() as connection:
        add_users(connection, T, {"id": "visitor"}, {"id": "member", "member_since": last})
        add_events(
            connection,
            T,
            ("visitor", "visit", last - 100 * DAY),
            ("visitor", "visit", last),
        )
    assert stages_at(store, last + 365 * DAY) == {"visitor": "prospect", "member": "lapsed_member"}
    assert stages_at(store, last + 365 * DAY + SECOND) == {
        "visitor": "churned",
        "member": "churned",
    }


def test_member_who_never_bought_lapses_after_lapsed_days_of_inactivity(store):
    with store.begin() as connection:
        add_users(connection, T, {"id": "m", "member_since": T - 300 * DAY})
        add_events(connection, T, ("m", "visit", T - 60 * DAY))
    assert stages_at(store, T) == {"m": "registered"}
    assert stages_at(store, T - 60 * DAY + 90 * DAY) == {"m": "registered"}
    assert stages_at(store, T - 60 * DAY + 90 * DAY + SECOND) == {"m": "lapsed_member"}


def test_refresh_churns_on_inactivity_alone_and_a_return_leaves_churned(store, tmp_path):
    ingest(
        store,
        tmp_path,
        now=T,
        users=[
            {"id": "buyer", "member_since": (T - 700 * DAY).isoformat()},
            {"id": "visitor"},
            {"id": "member", "member_since": (T - 600 * DAY).isoformat()},
            {"id": "idle", "member_since": (T - 600 * DAY).isoformat()},
        ],
        events=[
            {"user": "buyer", "type": "purchase", "at": (T - 500 * DAY).isoformat(), "amount": 80},
            # First seen long ago, last seen 360 days ago: five days from churning, and
            # no date of theirs but the last visit crosses a threshold in those days.
            {"user": "visitor", "type": "visit", "at": (T - 420 * DAY).isoformat()},
            {"user": "visitor", "type": "visit", "at": (T - 360 * DAY).isoformat()},
            {"user": "member", "type": "visit", "at": (T - 100 * DAY).isoformat()},
            # Never bought, last seen 85 days ago: five days from lapsing.
            {"user": "idle", "type": "visit", "at": (T - 85 * DAY).isoformat()},
        ],
    )
    refresh(store, T)
    assert open_stages(store) == {
        "buyer": "churned",
        "visitor": "prospect",
        "member": "lapsed_member",
        "idle": "registered",
    }

    # Ten days later, with no new data: the visitor crossed 365 days of inactivity and
    # idle 90 days.
    later = T + 10 * DAY
    refresh(store, later)
    assert open_stages(store) == {
        "buyer": "churned",
        "visitor": "churned",
        "member": "lapsed_member",
        "idle": "lapsed_member",
    }
    assert history(store, "visitor")[-1] == ("churned", T - 360 * DAY + 365 * DAY, None)
    assert history(store, "idle")[-1] == ("lapsed_member", T - 85 * DAY + 90 * DAY, None)
    assert history(store, "buyer") == [("churned", T - 500 * DAY + 365 * DAY, None)]

    # They come back: a visit each. The next refresh takes them out of churned.
    back = later + DAY
    ingest(
        store,
        tmp_path,
        now=back,
        events=[
            {"user": user, "type": "visit", "at": (back - HOUR).isoformat()}
            for user in ("buyer", "visitor", "member", "idle")
        ],
    )
    refresh(store, back)
    assert open_stages(store) == {
        "buyer": "lapsed_member",  # active again, but the last purchase is 511 days old
        "visitor": "prospect",
        "member": "registered",
        "idle": "registered",
    }
    # Its lapse began long ago by the clock, but it left churned when it came back.
    assert history(store, "buyer") == [
        ("churned", T - 500 * DAY + 365 * DAY, back - HOUR),
        ("lapsed_member", back - HOUR, None),
    ]
    assert history(store, "member")[-1] == ("registered", back - HOUR, None)
    with store.connect() as connection:
        computed = connection.execute(stages_as_of(connection, store.settings, back)).all()
    assert open_stages(store) == dict(computed)


def test_a_store_refreshed_with_the_old_definitions_is_recomputed_once(store):
    """Upgrading Nudge changes what the recorded stages mean; the next refresh redoes all."""
    with store.begin() as connection:
        add_users(connection, T, {"id": "u1", "member_since": T - 730 * DAY})
        add_events(connection, T, ("u1", "visit", T - 5 * HOUR))
        connection.execute(sa.update(User.__table__).values(stage_dirty=False))
        # What the previous release recorded: churned, and a mark hashed from the
        # thresholds alone.
        connection.execute(
            sa.insert(StageMembership.__table__).values(
                user_id="u1", stage="churned", entered_at=T - 365 * DAY, recorded_at=T
            )
        )
        old_hash = hashlib.sha256(store.settings.lifecycle.model_dump_json().encode()).hexdigest()
        connection.execute(
            sa.insert(LifecycleMark.__table__).values(
                name="stages", as_of=T, settings_hash=old_hash
            )
        )
    refresh(store, T + HOUR)
    assert open_stages(store) == {"u1": "registered"}
