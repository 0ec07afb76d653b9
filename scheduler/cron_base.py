"""What both cron dialects share: the error they raise, the dialect names, time zones and the
five fields.

A schedule's cron is read in one of two dialects (`CronDialect`): Cloud Scheduler's unix-cron
(`scheduler.cron`, the default and the only one Cloud Scheduler itself runs) and the Scion hub's
robfig/cron v3.0.1 dialect (`scheduler.cron_robfig`), which every schedule handed over from the
hub keeps so that it fires when the hub would have fired it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from scheduler.errors import SchedulerError


class CronError(SchedulerError, ValueError):
    """A cron expression its dialect does not accept, with the reason."""


class CronDialect(StrEnum):
    """How a schedule's cron is read; the value is how files and fire messages spell it."""

    UNIX = "unix"
    """Cloud Scheduler's unix-cron (the default)."""
    ROBFIG = "robfig"
    """The Scion hub's dialect: robfig/cron v3.0.1 with the hub's five-field parser."""


CRON_DIALECTS: tuple[str, ...] = tuple(d.value for d in CronDialect)

# Names a system zoneinfo directory holds that are not tz database zones: `localtime` is the
# host's own zone, which would make a schedule fire at different instants on different hosts.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def is_valid_timezone(name: str) -> bool:
    """An IANA zone name in the tz database (the `tzdata` package backs it where the system
    has none)."""
    return name in _known_zones()


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    """The zone of a valid name; `Etc/UTC` is read as `UTC`, which takes the fast paths."""
    return ZoneInfo("UTC" if name in ("UTC", "Etc/UTC") else name)


# A field of a five-field cron: (name, lowest value, highest value, names of values).
Field = tuple[str, int, int, dict[str, int]]
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def five_fields(*, upper: bool, day_of_week_high: int) -> tuple[Field, ...]:
    """The fields of a five-field cron in order, month and day names in the case the dialect's
    parser compares them in, and the day of week up to `day_of_week_high` (unix-cron takes 7
    for Sunday too, robfig does not)."""
    def named(names: tuple[str, ...], first: int) -> dict[str, int]:
        return {(n.upper() if upper else n): i for i, n in enumerate(names, first)}

    return (
        ("minute", 0, 59, {}),
        ("hour", 0, 23, {}),
        ("day of month", 1, 31, {}),
        ("month", 1, 12, named(_MONTH_NAMES, 1)),
        ("day of week", 0, day_of_week_high, named(_DAY_NAMES, 0)),
    )


def is_utc(tz: ZoneInfo) -> bool:
    """Whether the zone is UTC (no offset ever)."""
    return tz.key in ("UTC", "Etc/UTC")
