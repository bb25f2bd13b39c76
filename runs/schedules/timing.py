"""Cron expressions (5 fields, or ``@daily`` and the like) and their fire times in a time zone.

Times are reckoned on the schedule's wall clock, then placed in its zone: on the night the
clocks go forward a time that does not exist (02:30 in Europe/Paris) fires once, an hour
later by the clock (03:30); on the night they go back a time that happens twice (02:30)
fires once, the first time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def cron_problem(expression: str) -> str:
    """Why ``expression`` is not a cron expression we take; empty when it is."""
    text = expression.strip()
    if not text:
        return "cron is empty: give 5 fields (minute hour day-of-month month day-of-week) or @daily, @hourly, ..."
    if text.startswith("@"):
        return (
            "" if text.lower() in NICKNAMES else f"cron {text!r}: unknown nickname; use one of {', '.join(NICKNAMES)}"
        )
    if len(text.split()) != 5:
        return f"cron {text!r} has {len(text.split())} fields; give 5 (minute hour day-of-month month day-of-week)"
    try:
        times = croniter(text, datetime(2000, 1, 1))
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        return f"cron {text!r}: {exc}"
    try:
        times.get_next(datetime)
    except CroniterBadDateError:
        return f"cron {text!r} never fires (no such date, e.g. 30 February)"
    return ""


def timezone_problem(name: str) -> str:
    """Why ``name`` is not an IANA time zone; empty when it is."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"timezone {name!r} is not a known time zone (give an IANA name such as Europe/Paris or UTC)"
    return ""


def next_fire(expression: str, zone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), in UTC."""
    tz = ZoneInfo(zone)
    wall = after.astimezone(tz).replace(tzinfo=None)
    times = croniter(expression.strip().lower(), wall)
    while True:
        candidate = times.get_next(datetime).replace(tzinfo=tz, fold=0).astimezone(UTC)
        if candidate > after:  # a wall time moved by a clock change may fall behind ``after``
            return candidate


def latest_fire(expression: str, zone: str, due: datetime, now: datetime) -> tuple[datetime, int]:
    """The last fire time at or before ``now`` starting from ``due`` (itself one), and how
    many earlier ones it stands for (a portal that was down fires once on return)."""
    latest, missed = due, 0
    while (following := next_fire(expression, zone, latest)) <= now:
        latest, missed = following, missed + 1
        if missed > 10_000:  # years down with a per-minute schedule: no need to count them all
            break
    return latest, missed
