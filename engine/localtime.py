"""Shop-local wall-clock time -> instants: the one place Nudge attaches a time zone.

Ingest, `--at`, flight dates, offer end dates and send windows all turn a wall-clock
time into an instant. Doing it in one place gives every caller the same answer on
the two days a year that make this hard:

- **The gap** (clocks jump forward, e.g. 02:30 on the last Sunday of March in
  Europe/Berlin): that wall-clock time never happens. `wall_to_utc` refuses it with
  `NonexistentTimeError` rather than guessing; `day_start` and `next_opening` land on
  the first real instant after it, which is what "from the start of the day" or
  "from 02:30" means to a marketer.
- **The fold** (clocks fall back, e.g. 02:30 happens twice in late October): the
  first occurrence is meant (fold=0, still on summer time), like `at` and `cron`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class NonexistentTimeError(ValueError):
    """A wall-clock time that the zone skips (the spring-forward hour)."""

    def __init__(self, wall: datetime, zone: ZoneInfo):
        self.wall = wall
        self.zone = zone
        super().__init__(
            f"{wall.isoformat(sep=' ')} does not exist in {zone.key} "
            "(clocks jump forward at that hour); give the time with its UTC offset"
        )


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether a naive wall-clock time happens in `zone` (False inside a DST gap)."""
    local = wall.replace(tzinfo=zone, fold=0)
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall.replace(fold=0)


def wall_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` as a UTC instant; an aware one is converted.

    Raises NonexistentTimeError inside a DST gap; in a fold, the first occurrence.
    """
    if wall.tzinfo is not None:
        return wall.astimezone(UTC)
    if not exists(wall, zone):
        raise NonexistentTimeError(wall, zone)
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def first_instant_at_or_after(wall: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time in `zone`, or if the zone skips it, the end of the gap."""
    wall = wall.replace(tzinfo=None, fold=0)
    if exists(wall, zone):
        return wall.replace(tzinfo=zone).astimezone(UTC)
    # Inside a gap, the naive time read with the offset in force before the gap is an
    # instant after the jump; the jump itself is that instant's wall clock floored to
    # the hour or half hour the zone moves on. Walking minutes from the gap start is
    # exact for every real zone (gaps are whole minutes, at most a few hours).
    probe = wall
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        probe = probe.replace(second=0, microsecond=0)
        if exists(probe, zone):
            return probe.replace(tzinfo=zone).astimezone(UTC)
    raise NonexistentTimeError(wall, zone)  # pragma: no cover - no zone skips a day


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of a local calendar day (after the gap where midnight is skipped)."""
    return first_instant_at_or_after(datetime.combine(day, time()), zone)


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after a local calendar day: an inclusive end date ends here."""
    return day_start(day + timedelta(days=1), zone)


def shop_time_text(value: datetime | None, zone: ZoneInfo) -> str:
    """An instant as people read it: `2026-11-11 20:00:00+08:00`, the shop's wall clock
    to the second (microseconds are noise on a screen); an empty string for None. The
    CLI and the console both print instants through this."""
    if value is None:
        return ""
    return value.astimezone(zone).isoformat(sep=" ", timespec="seconds")


def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when there is none by that name.

    The standard library raises more than ZoneInfoNotFoundError for names that are not
    zones: ValueError for malformed ones, and IsADirectoryError for the name of a
    folder of the tz database ("US", "America", "Etc"), which it opens as if it were a
    zone file. All of them mean "not a time zone" to Nudge.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        return None
